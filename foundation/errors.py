"""One base for the project's errors, and one way to say any exception in one line.

Every error a user can cause (bad input, a bad pipespec, an unreachable server, a refused
credential) is an ``ExcameraError``, which is a ``ValueError`` so that callers catching
``ValueError`` keep working. Each package subclasses it for its own kind (``VP8Error``,
``StorageError``, ``SpecError``, ...). ``one_line`` is how the CLI and the runtime print any
exception: the message (an ``OSError``'s ``strerror``), whitespace folded to one line.
"""

from __future__ import annotations


class ExcameraError(ValueError):
    """A failure caused by input or circumstance, phrased as one line saying what and where."""


def one_line(exc: BaseException) -> str:
    """One line for an exception: OSErrors by their strerror, others by their message, else the
    exception's class name."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())
