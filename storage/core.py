"""Object storage for the runtime: an interface, a local-directory implementation, and a view
that confines every key to one job's prefix.

Keys are ``/``-separated relative names of ``[A-Za-z0-9._-]`` components (no ``..``, no empty
component, no leading ``/``); a key that would escape its prefix is refused with
``StorageError``. Writes go to a temporary name and are renamed into place, so readers never see
half an object and two workers writing the same object race harmlessly (last rename wins, and
in this runtime both wrote the same bytes). ``storage.open_storage`` picks the implementation from a URL. This module imports nothing else
from the project.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from foundation.errors import ExcameraError

MAX_KEY_LENGTH = 512
_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")


class StorageError(ExcameraError):
    """A bad key (escaping its prefix, malformed) or a missing object."""


@dataclass(frozen=True)
class ObjectRef:
    """A stored object as reported by whoever wrote it: key, hex sha256 and size in bytes."""

    key: str
    sha256: str
    size: int


def object_pairs(objects: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None
                 ) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of each object: from a mapping, or from an iterable of pairs, taken one at a
    time (a job's inputs may be produced lazily so that only one is held in memory)."""
    if objects is None:
        return iter(())
    return iter(objects.items()) if isinstance(objects, Mapping) else iter(objects)


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed relative key; raise StorageError saying why not."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"storage key {key!r}: empty or not a string")
    if len(key) > MAX_KEY_LENGTH:
        raise StorageError(f"storage key {key[:40]!r}...: longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/") or "\\" in key:
        raise StorageError(f"storage key {key!r}: must be relative and use '/' separators")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise StorageError(f"storage key {key!r}: empty, '.' or '..' component escapes the prefix")
        if not _COMPONENT.fullmatch(part):
            raise StorageError(f"storage key {key!r}: component {part!r} has characters outside "
                               f"[A-Za-z0-9._-]")
    return key


class Storage(ABC):
    """Key -> bytes. Implementations must make ``put`` atomic."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def put(self, key: str, data: bytes) -> ObjectRef: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    def digest(self, key: str) -> ObjectRef:
        """The object's actual sha256 and size (reads it)."""
        data = self.get(key)
        return ObjectRef(key, hashlib.sha256(data).hexdigest(), len(data))

    def stat(self, key: str) -> ObjectRef:
        """The object's size and sha256 as the storage itself reports them, without reading the
        bytes where it keeps a digest (S3's ``ChecksumSHA256``, a local file's extended
        attribute); ``sha256`` is empty where it keeps none. StorageError for a missing object.
        By default: read and hash it."""
        return self.digest(key)

    def verify(self, ref: ObjectRef) -> str | None:
        """None when the stored object matches ``ref``; otherwise why not, in one line. Believes
        the digest the storage reports (``stat``: the storage computed it from the bytes it
        received), and reads the bytes only where it reports none, or another."""
        try:
            known = self.stat(ref.key)
            if known.sha256 and known.size == ref.size and known.sha256 == ref.sha256:
                return None
            actual = self.digest(ref.key)
        except StorageError as e:
            return str(e)
        if actual.size != ref.size or actual.sha256 != ref.sha256:
            return (f"storage key {ref.key!r}: holds {actual.size} bytes with sha256 "
                    f"{actual.sha256[:16]}..., reported {ref.size} bytes with sha256 {ref.sha256[:16]}...")
        return None

    def scoped(self, prefix: str) -> "PrefixStorage":
        return PrefixStorage(self, prefix)

    def delete_prefix(self, prefix: str = "") -> int:
        """Remove every object under ``prefix`` (everything, if empty); how many."""
        keys = self.list(prefix)
        for k in keys:
            self.delete(k)
        return len(keys)

    def check(self) -> None:
        """A quick pre-flight before a job (StorageError saying why not); nothing by default."""

    @property
    def url(self) -> str:
        """What ``open_storage`` opens this storage again from (another process's too)."""
        raise NotImplementedError


#: The extended attribute holding a local object's sha256, its size and modification time (a file
#: rewritten in place keeps its attributes: those two tell a stale digest).
DIGEST_XATTR = "user.excamera.sha256"


def _remember_digest(fd: int, sha: str) -> None:
    """Keep ``sha`` with the open file just written (nothing where the filesystem has no user
    attributes: ``stat`` then reads the bytes)."""
    if hasattr(os, "setxattr"):
        st = os.fstat(fd)
        try:
            os.setxattr(fd, DIGEST_XATTR, f"{sha} {st.st_size} {st.st_mtime_ns}".encode())
        except OSError:
            pass


def _recalled_digest(fd: int) -> str:
    """The sha256 ``_remember_digest`` kept for this file, if the file is still as written; ''."""
    if not hasattr(os, "getxattr"):
        return ""
    try:
        sha, size, mtime = os.getxattr(fd, DIGEST_XATTR).decode().split()
    except (OSError, ValueError):
        return ""
    st = os.fstat(fd)
    return sha if (int(size), int(mtime)) == (st.st_size, st.st_mtime_ns) else ""


class LocalStorage(Storage):
    """Objects as files under a root directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @property
    def url(self) -> str:
        return str(self.root)  # a plain path, as workers have always been told

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        # check_key already forbids '..'; this also catches a symlinked component pointing out.
        if not path.resolve().is_relative_to(self.root):
            raise StorageError(f"storage key {key!r}: resolves outside the storage root")
        return path

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"storage key {key!r}: no such object") from None
        except IsADirectoryError:
            raise StorageError(f"storage key {key!r}: is a prefix, not an object") from None

    def put(self, key: str, data: bytes) -> ObjectRef:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        sha = hashlib.sha256(data).hexdigest()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                _remember_digest(f.fileno(), sha)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return ObjectRef(key, sha, len(data))

    def stat(self, key: str) -> ObjectRef:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise StorageError(f"storage key {key!r}: no such object") from None
        except IsADirectoryError:
            raise StorageError(f"storage key {key!r}: is a prefix, not an object") from None
        try:
            return ObjectRef(key, _recalled_digest(fd), os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / check_key(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not name.startswith("."):
                    out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(out)

    def delete_prefix(self, prefix: str = "") -> int:
        n = super().delete_prefix(prefix)
        base = self.root / check_key(prefix.strip("/")) if prefix.strip("/") else None
        if base is not None and base.is_dir() and base.resolve().is_relative_to(self.root):
            shutil.rmtree(base, ignore_errors=True)  # the directories (and any temporary files) too
        return n

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"{self.root}: {e.strerror or e}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"{self.root}: not a writable directory")


class PrefixStorage(Storage):
    """A view of ``base`` in which every key is relative to ``prefix`` and cannot leave it."""

    def __init__(self, base: Storage, prefix: str):
        self.base = base
        self.prefix = check_key(prefix.strip("/")) + "/"

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def get(self, key: str) -> bytes:
        full = self._full(key)
        try:
            return self.base.get(full)
        except StorageError as e:  # name the key as the caller knows it
            raise StorageError(str(e).replace(repr(full), repr(key))) from None

    def put(self, key: str, data: bytes) -> ObjectRef:
        ref = self.base.put(self._full(key), data)
        return ObjectRef(key, ref.sha256, ref.size)

    def exists(self, key: str) -> bool:
        return self.base.exists(self._full(key))

    def delete(self, key: str) -> None:
        self.base.delete(self._full(key))

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + (check_key(prefix.strip("/")) if prefix.strip("/") else "")
        return [k[len(self.prefix):] for k in self.base.list(full)]

    def digest(self, key: str) -> ObjectRef:
        data = self.get(key)
        return ObjectRef(key, hashlib.sha256(data).hexdigest(), len(data))

    def stat(self, key: str) -> ObjectRef:
        full = self._full(key)
        try:
            ref = self.base.stat(full)
        except StorageError as e:
            raise StorageError(str(e).replace(repr(full), repr(key))) from None
        return ObjectRef(key, ref.sha256, ref.size)

    def delete_prefix(self, prefix: str = "") -> int:
        full = self.prefix + (check_key(prefix.strip("/")) if prefix.strip("/") else "")
        return self.base.delete_prefix(full)

    def check(self) -> None:
        self.base.check()
