"""WanFit Lean Forward: the WAN model with a lean block forward (wanfit/lean_forward.py)."""

MODES = ("auto", "on", "off")
MODE_TOOLTIP = ("auto: follow the connected WanFit Offload Plan: lean blocks when the plan needs them for the job "
                "to fit, ComfyUI's own blocks (the model passes through unchanged) when they fit; without a plan, "
                "lean blocks. Before the first step the lean block is compared with this ComfyUI's own block on the "
                "real input; if they differ, ComfyUI's own blocks run and the report says why. on: always lean "
                "blocks (same result, less activation memory), and the run stops if that check fails. off: "
                "ComfyUI's own blocks, the model passes through unchanged (to compare, or to rule this node out).")


def _show_on_node(node_id):
    """Put a check's outcome on the node while the run goes on (the report output was written before)."""
    def notify(check):
        try:
            from server import PromptServer

            PromptServer.instance.send_progress_text(check.describe(), node_id)
        except Exception:  # noqa: BLE001 - no server (scripts, tests) or an older front end: the log has it
            pass
    return notify if node_id is not None else None


class WanFitLeanForward:
    DESCRIPTION = ("Runs this WAN model's transformer blocks over token chunks: the same result as ComfyUI's own "
                   "blocks (checked on each supported core), with about 5 hidden states of activation memory instead "
                   "of 9-13.5, so bigger videos fit a small card. Before it runs, it compares itself with this ComfyUI's "
                   "own block on the real input (once per process); where they differ, ComfyUI's own blocks run (mode "
                   "auto) or the run stops (mode on). With mode auto and a plan connected it patches only "
                   "when the plan needs it. Returns a patched clone; the input model is untouched, so each A14B expert "
                   "is patched on its own. Works with WanFit Sage Attention, LoRAs and fp8 weights; refuses a model "
                   "that already carries another block-replacing patch.")
    CATEGORY = "WanFit"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("A clone of the model whose blocks run lean, or the input model unchanged when the lean "
                       "forward is off (mode off, or auto with a plan that fits without it).",
                       "What was installed and the activation memory it saves, or why nothing was.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert). Apply "
                                               "the lean forward to both experts of an A14B pair."}),
                "mode": (list(MODES), {"default": "auto", "tooltip": MODE_TOOLTIP}),
                "chunk_tokens": ("INT", {
                    "default": 0, "min": 0, "max": 1_000_000, "step": 256,
                    "tooltip": "Tokens per chunk. 0 = auto (the plan's chunk size, else 1/8 of the sequence, at "
                               "least 4096 tokens): the memory saving with GPU-sized matmuls. Smaller saves a "
                               "little more memory during the FFN and costs speed; it must not exceed the job's "
                               "token count.",
                }),
            },
            "optional": {
                "plan": ("WANFIT_PLAN", {"tooltip": "Optional WanFit Offload Plan: with mode auto it decides "
                                                    "whether the lean forward runs; its chunk size applies when "
                                                    "chunk_tokens is 0 (auto)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def patch(self, model, mode="auto", chunk_tokens=0, plan=None, unique_id=None):
        from ..wanfit.lean_forward import apply_lean_forward

        patched, report = apply_lean_forward(model, mode, chunk_tokens, plan, notify=_show_on_node(unique_id))
        return {"ui": {"text": [report]}, "result": (patched, report)}


NODE_CLASS_MAPPINGS = {"WanFitLeanForward": WanFitLeanForward}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitLeanForward": "WanFit Lean Forward"}
