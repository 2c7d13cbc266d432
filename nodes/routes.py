"""HTTP routes on ComfyUI's server: GET /wanfit/plan (same inputs as the WanFit Offload Plan node)."""

import logging

log = logging.getLogger("wanfit")


def register_routes(routes, web, probe_device, probe_core=None):
    """GET /wanfit/plan plans for `probe_core()` (the running core), read on every request."""

    @routes.get("/wanfit/plan")
    async def get_plan(request):
        from ..wanfit.errors import InvalidInputError, WanFitError
        from ..wanfit.plan import PlanDoesNotFitError
        from ..wanfit.plan_options import plan_from_query

        try:
            core = probe_core() if probe_core is not None else None
            result = plan_from_query(dict(request.rel_url.query), probe_device, core)
        except InvalidInputError as error:
            return web.json_response({"error": str(error), "field": error.field}, status=400)
        except PlanDoesNotFitError as error:
            return web.json_response({"error": str(error), "suggestions": list(error.suggestions),
                                      "max_frames": error.max_frames,
                                      "required_ram_bytes": error.required_ram_bytes}, status=422)
        except WanFitError as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(result.as_dict())


def register_with_comfyui():
    """Called at package import; outside a running ComfyUI server there is nothing to register."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return False
    if getattr(PromptServer, "instance", None) is None:
        return False
    from .plan import probe_for_plan, running_core

    register_routes(PromptServer.instance.routes, web, probe_for_plan, running_core)
    return True
