from comfy_api.latest import io

from ..wanfit.choices import ATTENTION_MODES
from .sockets import output, plan_input, shown


class WanFitSageAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitSageAttention", display_name="WanFit Sage Attention", category="WanFit",
            description="Routes this model's attention through a sageattention kernel where it runs, else PyTorch SDPA.",
            inputs=[
                io.Model.Input("model", tooltip="The WAN 2.2 diffusion model (TI2V-5B, or one A14B expert)."),
                io.Combo.Input("mode", options=list(ATTENTION_MODES), default="auto",
                               tooltip="auto: the fastest verified kernel, else SDPA; disabled: ComfyUI's own "
                                       "attention; the others force one kernel family."),
                io.Boolean.Input("keep_cross_attention_on_sdpa", default=False,
                                 tooltip="Run the text cross-attention on SDPA; turn on if sage output ignores the "
                                         "prompt."),
                io.Int.Input("nan_check_calls", default=8, min=0, max=10000,
                             tooltip="How many first kernel outputs are checked for NaN/Inf; 0 disables the check."),
                plan_input("Optional WanFit Offload Plan: its attention preference applies when mode is auto."),
            ],
            outputs=[output(io.Model, "model", "A clone of the model with the attention override set."),
                     output(io.String, "report", "Which backend runs and why.")])

    @classmethod
    def execute(cls, model, mode, keep_cross_attention_on_sdpa, nan_check_calls, plan=None):
        from ..wanfit.attention import patch_model_attention

        patched, report = patch_model_attention(model, mode, plan=plan,
                                                keep_cross_attention_on_sdpa=keep_cross_attention_on_sdpa or None,
                                                nan_check_calls=nan_check_calls)
        return shown(report, patched, report)


class WanFitAttentionReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitAttentionReport", display_name="WanFit Attention Report", category="WanFit",
            description="Reports, after sampling, which attention backend ran and how many calls went where.",
            inputs=[
                io.Model.Input("model", tooltip="The model that was sampled (the output of WanFit Sage Attention)."),
                io.Latent.Input("samples", tooltip="The sampler's output, so the report runs after sampling."),
                io.Boolean.Input("reset_counts", default=True,
                                 tooltip="Zero the call counts after reporting, so each run reports its own calls."),
            ],
            outputs=[output(io.Latent, "samples", "The input latent, unchanged."),
                     output(io.String, "report", "Backend, reason and call counts since the last report.")],
            is_output_node=True)

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        return float("nan")  # counts change with every run of the sampler

    @classmethod
    def execute(cls, model, samples, reset_counts):
        from ..wanfit.attention import find_override
        from ..wanfit.lean_forward import lean_report

        override = find_override(model)
        if override is None:
            text = "no WanFit attention patch on this model: ComfyUI's own attention ran"
            counts = {}
        else:
            text = override.report()
            counts = override.stats.as_dict()
            counts["backend"] = override.backend_description()
            if reset_counts:
                override.stats.reset()
        lean = lean_report(model)  # the model came through WanFit Lean Forward: which blocks ran, and the check
        if lean:
            text = f"{text}\n{lean}"
        return shown(text, samples, text, wanfit_attention=[counts])
