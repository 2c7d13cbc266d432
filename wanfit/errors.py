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
        message = f"{field}={_short_repr(value)} is invalid: expected {expected}."
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


def _short_repr(value, limit=80):
    """repr(value), cut in the middle when long: a 5000-digit query value should not become a 5 KB message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]}...{text[-limit // 4:]} ({len(text)} characters)"
