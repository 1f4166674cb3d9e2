"""Object storage, on the ground floor: every other package may import it, it imports none of them.

- ``storage.core``: the ``Storage`` interface, ``ObjectRef``, key rules, ``LocalStorage`` (a
  directory) and ``PrefixStorage`` (one job's view);
- ``storage.s3``: ``S3Storage`` (``s3://BUCKET/PREFIX``), imported only when a URL names S3;
- ``storage.speculative``: reads and writes issued again when slow against their peers.

``open_storage(url)`` picks the implementation from a URL: a path or ``file:///DIR`` is a
``LocalStorage``, ``s3://BUCKET/PREFIX`` an ``S3Storage``.
"""

from __future__ import annotations

import os
import re

from storage.core import (MAX_KEY_LENGTH, LocalStorage, ObjectRef, PrefixStorage, Storage,
                          StorageError, check_key, object_pairs)

__all__ = ["MAX_KEY_LENGTH", "LocalStorage", "ObjectRef", "PrefixStorage", "Storage",
           "StorageError", "check_key", "object_pairs", "open_storage"]


def open_storage(url: str | os.PathLike, **kw) -> Storage:
    """The storage ``url`` names: ``s3://BUCKET/PREFIX`` (keyword arguments go to ``S3Storage``),
    ``file:///DIR`` or a plain directory path. StorageError for anything else."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise StorageError("storage: empty; give a directory or s3://BUCKET/PREFIX")
    if text.startswith("s3://"):
        from storage.s3 import S3Storage

        return S3Storage.from_url(text, **kw)
    if text.startswith("file://"):
        path = text[len("file://"):]
        if not path.startswith("/"):
            raise StorageError(f"{text}: a file:// URL needs an absolute path (file:///DIR)")
        return LocalStorage(path)
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme:
        raise StorageError(f"{text}: unknown scheme {scheme[1]!r}; give a directory, "
                           f"file:///DIR or s3://BUCKET/PREFIX")
    return LocalStorage(text)
