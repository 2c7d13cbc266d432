"""Budgets for tests that need WanFit's tiles to run, read from the decode's own memory model (never a number
written down for an older model): on a CPU the VAE's own decode fits below any tiling, so these plans leave
the untiled decode out."""


def tiled_exact_budget(module, latent_shape, most_tiles):
    """The smallest budget (10 % steps) at which the decode plans `module` (a WAN VAE's first_stage_model) as
    at most most_tiles exact tiles, the untiled decode left out."""
    from wanfit.decode import plan_decode
    from wanfit.errors import WanFitError

    budget = 16 * 2**20
    while budget < 2**36:
        try:
            plan = plan_decode(module, latent_shape, budget, allow_untiled=False)
        except WanFitError:
            plan = None
        if plan is not None and plan.exact and not plan.untiled and plan.tile_count <= most_tiles:
            return budget
        budget = int(budget * 1.1)
    raise AssertionError(f"no budget up to 64 GB plans {latent_shape} as {most_tiles} exact tiles or fewer")
