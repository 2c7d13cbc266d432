"""WanFit Lean Forward: the WAN model with a lean block forward (wanfit/lean_forward.py)."""

from comfy_api.latest import io

from ..wanfit.choices import REPLAY_MODES
from .sockets import output, plan_input


def _show_on_node(node_id):
    """Put a check's outcome on the node while the run goes on (the report output was written before)."""
    def notify(check):
        try:
            from server import PromptServer

            PromptServer.instance.send_progress_text(check.describe(), node_id)
        except Exception:  # noqa: BLE001 - no server (scripts, tests) or an older front end: the log has it
            pass
    return notify if node_id is not None else None


class WanFitLeanForward(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLeanForward", display_name="WanFit Lean Forward", category="WanFit",
            description="Runs the WAN blocks over token chunks: the same result with less activation memory.",
            inputs=[
                io.Model.Input("model", tooltip="The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert)."),
                io.Combo.Input("mode", options=list(REPLAY_MODES), default="auto",
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
        from ..wanfit.lean_forward import apply_lean_forward

        patched, report = apply_lean_forward(model, mode, chunk_tokens, plan, notify=_show_on_node(cls.hidden.unique_id))
        return io.NodeOutput(patched, report, ui={"text": [report]})
