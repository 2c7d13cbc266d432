"""ComfyUI-WanFit: WAN 2.2 video generation that fits the GPU it runs on.

ComfyUI imports this folder under whatever name it was cloned as, so every import inside the package
is relative. Nothing heavy is imported here: ComfyUI calls comfy_entrypoint once its own modules
(comfy_api among them) are loaded, and only then are the nodes imported.
"""

WEB_DIRECTORY = "./js"


def comfy_entrypoint():
    """ComfyUI's V3 entry: the extension that lists WanFit's nodes; registers the /wanfit routes too."""
    from .nodes import WanFitExtension
    from .nodes.routes import register_with_comfyui

    register_with_comfyui()
    return WanFitExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
