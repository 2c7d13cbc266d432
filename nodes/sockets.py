"""WanFit's own socket types, and the one way a node shows its report on itself."""

from comfy_api.latest import io

Plan = io.Custom("WANFIT_PLAN")
Device = io.Custom("WANFIT_DEVICE")


def plan_input(tooltip):
    """The optional plan socket of the loaders, Sage Attention, Lean Forward and VAE Decode."""
    return Plan.Input("plan", optional=True, tooltip=tooltip)


def output(kind, name, tooltip):
    """An output named as in V1 (RETURN_NAMES): the name is what saved workflows and the editor show."""
    return kind.Output(display_name=name, tooltip=tooltip)


def shown(text, *results, **ui):
    """The node's results, with `text` in its report area (js/wanfit.js) and in /history."""
    return io.NodeOutput(*results, ui={"text": [text], **ui})
