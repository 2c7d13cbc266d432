import hashlib

from ..wanfit.errors import WanFitError
from ..wanfit.latents import list_saved_latents, load_saved_latent, resolve_saved_latent


def output_dir():
    import folder_paths

    return folder_paths.get_output_directory()


class WanFitLoadSavedLatent:
    DESCRIPTION = ("Loads a latent that SaveLatent wrote to the output folder (the shipped workflows save one "
                   "before decoding), so a decode that failed, or one you want at another budget, can be redone "
                   "without sampling again. Stock Load Latent only sees the input folder.")
    CATEGORY = "WanFit"
    FUNCTION = "load"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The saved latent, as the sampler produced it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"latent": (list_saved_latents(output_dir()) or [""], {
            "tooltip": "A .latent file under the output folder, newest first (e.g. latents/wanfit_a14b_t2v_00001_.latent)."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, latent):
        try:
            resolve_saved_latent(output_dir(), latent)
        except WanFitError as error:
            return str(error)
        return True

    @classmethod
    def IS_CHANGED(cls, latent):
        path = resolve_saved_latent(output_dir(), latent)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def load(self, latent):
        return (load_saved_latent(resolve_saved_latent(output_dir(), latent)),)


NODE_CLASS_MAPPINGS = {"WanFitLoadSavedLatent": WanFitLoadSavedLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"WanFitLoadSavedLatent": "WanFit Load Saved Latent"}
