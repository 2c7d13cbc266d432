"""WanFit Lean Forward: the WAN model with a lean block forward (wanfit/lean_forward.py)."""

from comfy_api.latest import io

from ..wanfit.plan.types import plan_field as _planned
from .sockets import output, plan_input

MODES = ("auto", "on", "off")


def _show_on_node(node_id):
    """Put a check's outcome on the node while the run goes on (the report output was written before)."""
    def notify(check):
        try:
            from server import PromptServer

            PromptServer.instance.send_progress_text(check.describe(), node_id)
        except Exception:  # noqa: BLE001 - no server (scripts, tests) or an older front end: the log has it
            pass
    return notify if node_id is not None else None


def patch(model, mode="auto", chunk_tokens=0, plan=None, unique_id=None):
    from ..wanfit.errors import InvalidInputError
    from ..wanfit.lean_forward import LeanForwardError, patch_model_lean

    if mode not in MODES:
        raise InvalidInputError("mode", mode, " / ".join(MODES), "pick one of the listed modes")
    if mode == "off":
        report = "Lean forward off: ComfyUI's own blocks run (the model passes through unchanged)"
        return {"ui": {"text": [report]}, "result": (model, report)}
    if mode == "auto" and plan is not None and not _planned(plan, "lean_forward"):
        report = ("Lean forward not needed: the plan fits this job with ComfyUI's own blocks (the model passes "
                  "through unchanged; mode on forces the lean forward)")
        return {"ui": {"text": [report]}, "result": (model, report)}
    chunk = chunk_tokens if chunk_tokens > 0 else (_planned(plan, "lean_chunk_tokens") or "auto")
    try:
        patched, report = patch_model_lean(model, chunk, fallback=mode == "auto", notify=_show_on_node(unique_id))
    except LeanForwardError as error:
        if mode != "auto":
            raise
        # a model or core the lean forward cannot take: auto keeps ComfyUI's own blocks and says why
        report = f"Lean forward not applied, ComfyUI's own blocks run (the model passes through unchanged): {error}"
        return {"ui": {"text": [report]}, "result": (model, report)}
    if mode == "auto" and plan is not None:
        report += " (the plan needs it for this job to fit)"
    return {"ui": {"text": [report]}, "result": (patched, report)}


class WanFitLeanForward(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLeanForward", display_name="WanFit Lean Forward", category="WanFit",
            description="Runs the WAN blocks over token chunks: the same result with less activation memory.",
            inputs=[
                io.Model.Input("model", tooltip="The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert)."),
                io.Combo.Input("mode", options=list(MODES), default="auto",
                               tooltip="auto: lean blocks when the plan needs them (checked against this ComfyUI "
                                       "first); on: always; off: ComfyUI's own blocks."),
                io.Int.Input("chunk_tokens", default=0, min=0, max=1_000_000, step=256,
                             tooltip="Tokens per chunk; 0 = auto (the plan's chunk size, else 1/8 of the sequence)."),
                plan_input("Optional WanFit Offload Plan: decides, with mode auto, whether the lean forward runs."),
            ],
            outputs=[output(io.Model, "model", "A clone whose blocks run lean, or the input model unchanged."),
                     output(io.String, "report", "What was installed and the memory it saves, or why nothing was.")],
            hidden=[io.Hidden.unique_id])

    @classmethod
    def execute(cls, model, mode="auto", chunk_tokens=0, plan=None):
        answer = patch(model, mode, chunk_tokens, plan, unique_id=cls.hidden.unique_id)
        return io.NodeOutput(*answer["result"], ui=answer["ui"])
