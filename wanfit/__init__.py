"""WanFit core: importable with torch alone; nothing here imports ComfyUI at module level."""

__version__ = "0.1.0"
