"""The three ways a model file is refused, each naming the file and the fix."""

from ..errors import WanFitError

DOWNLOAD_HINT = "run `python -m wanfit models` to list the official files and `--download NAME` to fetch one"


class ModelFileError(WanFitError):
    """The file is missing, empty, truncated or not safetensors: nothing could be read from it."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(message)


class ModelMismatchError(WanFitError):
    """The file is readable but is the wrong model for this slot (wrong kind, variant, VAE or pair)."""

    def __init__(self, message, paths=()):
        self.paths = [str(p) for p in paths]
        super().__init__(message)


class MissingModelError(ModelFileError):
    """A model the workflow needs is not in the ComfyUI models folder."""

    def __init__(self, path, message, folder, url):
        self.folder = folder
        self.url = url
        super().__init__(path, message)
