import hashlib

from comfy_api.latest import io

from ..wanfit.errors import WanFitError
from ..wanfit.latents import list_saved_latents, load_saved_latent, resolve_saved_latent
from .sockets import output


def output_dir():
    import folder_paths

    return folder_paths.get_output_directory()


class WanFitLoadSavedLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanFitLoadSavedLatent", display_name="WanFit Load Saved Latent", category="WanFit",
            description="Loads a latent saved in the output folder, to decode it again without sampling again.",
            inputs=[io.Combo.Input("latent", options=list_saved_latents(output_dir()) or [""],
                                   tooltip="A .latent file under the output folder, newest first.")],
            outputs=[output(io.Latent, "samples", "The saved latent, as the sampler produced it.")])

    @classmethod
    def validate_inputs(cls, latent):
        try:
            resolve_saved_latent(output_dir(), latent)
        except WanFitError as error:
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, latent):
        return hashlib.sha256(resolve_saved_latent(output_dir(), latent).read_bytes()).hexdigest()

    @classmethod
    def execute(cls, latent):
        return io.NodeOutput(load_saved_latent(resolve_saved_latent(output_dir(), latent)))
