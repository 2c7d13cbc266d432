"""Errors that ComfyUI shows in the node's error panel.

Every message names the file or field, what was expected, and the fix.
"""


class WanFitError(Exception):
    """Base of every error WanFit raises on purpose."""


class InvalidInputError(WanFitError, ValueError):
    """A node input, CLI option or query parameter is out of range."""

    def __init__(self, field, value, expected, fix=""):
        self.field = field
        self.value = value
        message = f"{field}={value!r} is invalid: expected {expected}."
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class ComfyUINotFoundError(WanFitError):
    """No ComfyUI checkout where one is needed (tests, demo)."""
