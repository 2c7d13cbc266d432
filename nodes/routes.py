"""HTTP routes on ComfyUI's server: GET /wanfit/plan (same inputs as the WanFit Offload Plan node) and
GET /wanfit/plan/preview, its twin for the editor, which answers 200 with the outcome in the body (a
browser logs every 4xx answer as a console error, and a plan that does not fit is no error there)."""

import logging

log = logging.getLogger("wanfit")


def register_routes(routes, web, probe_device, probe_core=None):
    """GET /wanfit/plan plans for `probe_core()` (the running core), read on every request."""

    def plan_answer(query):
        """(HTTP status, body) of a plan for these query parameters."""
        from ..wanfit.errors import InvalidInputError, WanFitError
        from ..wanfit.plan import PlanDoesNotFitError, plan_from_query

        try:
            core = probe_core() if probe_core is not None else None
            result = plan_from_query(dict(query), probe_device, core)
        except InvalidInputError as error:
            return 400, {"error": str(error), "field": error.field}
        except PlanDoesNotFitError as error:
            return 422, {"error": str(error), "suggestions": list(error.suggestions), "max_frames": error.max_frames,
                         "required_ram_bytes": error.required_ram_bytes}
        except WanFitError as error:
            return 400, {"error": str(error)}
        return 200, {**result.as_dict(), "summary": result.summary()}

    @routes.get("/wanfit/plan")
    async def get_plan(request):
        status, body = plan_answer(request.rel_url.query)
        return web.json_response(body, status=status)

    @routes.get("/wanfit/plan/preview")
    async def get_plan_preview(request):
        """The same answer, always 200: {"status": what /wanfit/plan would answer, "fits": bool, ...}."""
        status, body = plan_answer(request.rel_url.query)
        return web.json_response({**body, "status": status, "fits": status == 200})


def register_with_comfyui():
    """Called by comfy_entrypoint; outside a running ComfyUI server there is nothing to register."""
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
