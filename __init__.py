"""ComfyUI-WanFit: WAN 2.2 video generation that fits the GPU it runs on.

ComfyUI imports this folder under whatever name it was cloned as, so every import
inside the package is relative. Nothing heavy is imported here.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # loaded as a lone file (pytest sets up the checkout folder as a package; a folder name such
    # as "ComfyUI-WanFit" is no Python name, so there is no parent package to import the nodes from)
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
