"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""


class DcompError(Exception):
    """Base of every expected failure (bad input, corrupt file, missing weights)."""


class CorruptFileError(DcompError):
    """The bytes are not a valid .dcz file (truncated, flipped, wrong magic)."""


class UnsupportedError(DcompError):
    """Valid input that this version cannot handle (newer format, image mode)."""


class UnknownMethodError(DcompError):
    """A method name or id that the registry does not know."""


class WeightsError(DcompError):
    """Weights missing, unreadable, or not the ones a file was made with."""


class LimitError(DcompError):
    """Input over a resource limit (pixels); the limit can be raised on request."""
