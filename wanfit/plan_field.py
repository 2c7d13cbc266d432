"""Reading one field of a plan, whichever form it arrives in."""


def plan_field(plan, name, default=None):
    """A plan's field, from a Plan or from the dict a plan travels as (JSON, GET /wanfit/plan); `default`
    without a plan, so a node or loader with no plan connected reads its own defaults."""
    if plan is None:
        return default
    if isinstance(plan, dict):
        return plan.get(name, default)
    return getattr(plan, name, default)
