"""Errors raised by the codec.

Every error the codec raises for bad input is a ``VP8Error``; each subclass also derives from the
matching builtin so callers that only know ``ValueError`` still catch it. Messages say what went
wrong and where (frame number, byte offset) so the CLI can print them as one line.
"""

from foundation.errors import ExcameraError


class VP8Error(ExcameraError):
    """Base class of every codec error."""


class CorruptFrameError(VP8Error, ValueError):
    """A compressed frame is malformed (truncated, overrunning partitions, impossible values)."""


class UnsupportedError(VP8Error, ValueError):
    """Valid input that this codec does not handle (for example a non-VP8 fourcc, 4:4:4 video)."""


class ContainerError(VP8Error, ValueError):
    """A malformed IVF or Y4M container (bad signature, truncated header or frame)."""


class StateError(VP8Error, ValueError):
    """A serialized decoder state is corrupt, of an unknown version, or does not fit the stream."""
