"""Input sources as references: a video is read where it lies, by byte ranges, never copied whole.

A source is named by a string (``docs/design/data-path.md``):

* a local path or ``file:///PATH``: read with ``os.pread``;
* ``s3://BUCKET/KEY``: S3 ranged GETs, each with ``IfMatch`` on the ETag first seen;
* ``https://...`` (or ``http://``): HTTP ``Range`` requests with ``If-Range`` and ``If-Match`` on the
  ETag first seen (a server without ranges or without an ETag is refused: a worker could not tell
  its range from another version's);
* ``job:KEY``: an object in the job's own storage (the compressed input uploaded once, for workers
  that cannot reach the client's file), read by range from the storage underneath.

``open_ranges(ref)`` gives a ``Ranges`` (``size``, ``version``, ``read(offset, n)``); every read
checks that the object is still the version first seen (``version``, passed on to workers so
that they check against the client's), and a changed object raises ``SourceChanged``.
``RangeFile`` wraps one as a read-only seekable binary file that PyAV and ``codec.y4m`` open,
fetching aligned blocks (one request each, a few kept) and counting the bytes it fetched.
Errors are ``SourceError``: one line naming the source.
"""

from __future__ import annotations

import collections
import io
import os
import re
import stat
import threading

from foundation.errors import ExcameraError

#: Bytes one request fetches (an aligned block), per kind: a remote request costs a round trip.
BLOCK_LOCAL = 256 << 10
BLOCK_REMOTE = 1 << 20
#: Blocks a ``RangeFile`` keeps (a demuxer's reads jump between the index and the data).
KEPT_BLOCKS = 4
#: Seconds an HTTP request may wait on the server.
HTTP_TIMEOUT_S = 30.0


class SourceError(ExcameraError):
    """The source cannot be read (missing, refused, no ranges): one line naming it."""


class SourceChanged(SourceError):
    """The object is no longer the version first seen (a later write replaced it)."""


def kind_of(ref: str) -> str:
    """``file``, ``s3``, ``http`` or ``job`` for a source reference; SourceError for another
    scheme."""
    if ref.startswith("s3://"):
        return "s3"
    if ref.startswith(("https://", "http://")):
        return "http"
    if ref.startswith("job:"):
        return "job"
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", ref)
    if scheme and scheme[1] != "file":
        raise SourceError(f"{ref}: unknown scheme {scheme[1]!r}; give a path, file://, s3:// or https:// URL")
    return "file"


def local_path(ref: str) -> str:
    """The absolute path of a ``file`` reference."""
    if ref.startswith("file://"):
        path = ref[len("file://"):]
        if not path.startswith("/"):
            raise SourceError(f"{ref}: a file:// URL needs an absolute path (file:///PATH)")
        return path
    return os.path.abspath(ref)


class Ranges:
    """Byte ranges of one version of one object. ``version``: what identifies that version (an
    ETag, or a file's size and modification time)."""

    size: int
    version: str
    block: int = BLOCK_REMOTE

    def __init__(self, ref: str):
        self.ref = ref
        self.fetched = 0   # bytes fetched
        self.requests = 0

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` (fewer only at the end of the object)."""
        n = max(0, min(n, self.size - offset))
        if n == 0:
            return b""
        data = self._read(offset, n)
        if len(data) != n:
            raise SourceError(f"{self.ref}: asked for {n} bytes at offset {offset}, got {len(data)}")
        self.fetched += n
        self.requests += 1
        return data

    def _read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _check_version(self, expect: str | None) -> None:
        if expect and expect != self.version:
            raise SourceChanged(f"{self.ref}: changed while the job ran (version {self.version}, "
                                f"planned on {expect})")


class FileRanges(Ranges):
    """A local file, by ``os.pread``; its version is its size and modification time, checked on
    every read (a file rewritten in place keeps its inode)."""

    block = BLOCK_LOCAL

    def __init__(self, ref: str, version: str | None = None):
        super().__init__(ref)
        path = local_path(ref)
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise SourceError(f"{ref}: {e.strerror or e}") from None
        info = os.fstat(self.fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self.fd)
            raise SourceError(f"{ref}: not a regular file")
        self.size, self.version = info.st_size, self._stamp(info)
        self._check_version(version)

    @staticmethod
    def _stamp(st) -> str:
        return f"{st.st_size}-{st.st_mtime_ns}"

    def _read(self, offset: int, n: int) -> bytes:
        now = self._stamp(os.fstat(self.fd))
        if now != self.version:
            raise SourceChanged(f"{self.ref}: changed while the job ran")
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class S3Ranges(Ranges):
    """An S3 object, by ranged GETs pinned to its ETag (``IfMatch``)."""

    def __init__(self, ref: str, version: str | None = None, *, client=None, bucket: str = "", key: str = ""):
        super().__init__(ref)
        if client is None:
            bucket, _, key = ref[len("s3://"):].partition("/")
            if not bucket or not key:
                raise SourceError(f"{ref}: give s3://BUCKET/KEY")
            from botocore.config import Config

            from storage.s3 import boto3_session
            client = boto3_session().client("s3", config=Config(retries={"mode": "standard"}))
        self.client, self.bucket, self.key = client, bucket, key
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as e:  # noqa: BLE001 - botocore's errors, said in one line
            raise self._fail(e) from None
        self.size, self.version = int(head["ContentLength"]), head["ETag"]
        self._check_version(version)

    def _fail(self, e: Exception) -> SourceError:
        code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412"):
            return SourceChanged(f"{self.ref}: changed while the job ran (its ETag is no longer {self.version})")
        if code in ("404", "NoSuchKey", "NotFound"):
            return SourceError(f"{self.ref}: no such object")
        if code == "NoSuchBucket":
            return SourceError(f"{self.ref}: no such bucket")
        if code in ("403", "AccessDenied", "Forbidden"):
            return SourceError(f"{self.ref}: access denied")
        if code in ("416", "InvalidRange"):
            return SourceError(f"{self.ref}: the server refused the range")
        name = type(e).__name__
        if name == "NoCredentialsError":
            return SourceError(f"{self.ref}: no AWS credentials")
        return SourceError(f"{self.ref}: {code + ': ' if code else ''}{' '.join(str(e).split())}")

    def _read(self, offset: int, n: int) -> bytes:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key, IfMatch=self.version,
                                       Range=f"bytes={offset}-{offset + n - 1}")
            data = r["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise self._fail(e) from None
        if r.get("ETag", self.version) != self.version:
            raise SourceChanged(f"{self.ref}: changed while the job ran")
        return data


class HttpRanges(Ranges):
    """An HTTP(S) resource, by ``Range`` requests. Each carries ``If-Range`` and ``If-Match`` with
    the ETag first seen: a server that answers anything but 206 with that ETag fails the read."""

    def __init__(self, ref: str, version: str | None = None):
        super().__init__(ref)
        status, headers, _ = self._request(0, 1, version)
        etag = headers.get("ETag", "")
        if status != 206:
            raise SourceError(f"{ref}: the server does not serve byte ranges (answered {status} to a Range request)")
        if not etag or etag.startswith("W/"):
            raise SourceError(f"{ref}: the server gives no strong ETag, so a changed file could not be told apart")
        m = re.fullmatch(r"bytes 0-0/(\d+)", headers.get("Content-Range", "").strip())
        if not m:
            raise SourceError(f"{ref}: the server's Content-Range {headers.get('Content-Range')!r} gives no size")
        self.size, self.version = int(m[1]), etag
        self._check_version(version)

    def _request(self, offset: int, n: int, etag: str | None):
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.ref, headers={"Range": f"bytes={offset}-{offset + n - 1}"})
        if etag:
            req.add_header("If-Range", etag)
            req.add_header("If-Match", etag)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
                status, headers = r.status, r.headers
                body = r.read(n) if status == 206 else b""  # never the whole file
                return status, headers, body
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 412:
                raise SourceChanged(f"{self.ref}: changed while the job ran (its ETag is no longer {etag})") from None
            if e.code == 416:
                raise SourceError(f"{self.ref}: the server refused the range {offset}-{offset + n - 1}") from None
            raise SourceError(f"{self.ref}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise SourceError(f"{self.ref}: {getattr(reason, 'strerror', None) or reason}") from None

    def _read(self, offset: int, n: int) -> bytes:
        status, headers, body = self._request(offset, n, self.version)
        if status != 206 or headers.get("ETag", "") != self.version:
            raise SourceChanged(f"{self.ref}: changed while the job ran (the server answered {status} "
                                f"with ETag {headers.get('ETag', 'none')}, not {self.version})")
        return body


def storage_ranges(storage, key: str, version: str | None = None) -> Ranges:
    """Ranges of object ``key`` of a ``storage.Storage`` (the job's view on a worker): the file
    or S3 object underneath, so a worker reads its range, not the whole object."""
    from storage.core import LocalStorage, PrefixStorage, check_key

    full = check_key(key)
    while True:
        if isinstance(storage, PrefixStorage):
            full, storage = storage.prefix + full, storage.base
        elif type(storage).__name__ == "SpeculativeStorage":
            storage = storage.base
        else:
            break
    ref = f"job:{key}"
    if isinstance(storage, LocalStorage):
        ranges = FileRanges(os.path.join(storage.root, full), version)
        ranges.ref = ref
        return ranges
    if type(storage).__name__ == "S3Storage":
        return S3Ranges(ref, version, client=storage.client, bucket=storage.bucket, key=storage.prefix + full)
    raise SourceError(f"{ref}: storage {type(storage).__name__} has no ranged reads")


def open_ranges(ref: str, version: str | None = None, *, storage=None) -> Ranges:
    """The ``Ranges`` of source ``ref``; with ``version``, SourceChanged unless it is still that
    version. ``storage``: the job's, for a ``job:`` reference."""
    kind = kind_of(ref)
    if kind == "file":
        return FileRanges(ref, version)
    if kind == "s3":
        return S3Ranges(ref, version)
    if kind == "http":
        return HttpRanges(ref, version)
    if storage is None:
        raise SourceError(f"{ref}: a job: source is read by the job's workers only")
    return storage_ranges(storage, ref[len("job:"):], version)


class RangeFile(io.RawIOBase):
    """``ranges`` as a read-only, seekable binary file: reads are served from aligned blocks of
    ``ranges.block`` bytes, each fetched by one request, the last ``KEPT_BLOCKS`` kept."""

    def __init__(self, ranges: Ranges, name: str | None = None):
        super().__init__()
        self.ranges, self.pos = ranges, 0
        self.name = name or ranges.ref
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.ranges.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.ranges.size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self.pos = base + offset
        return self.pos

    def _block(self, index: int) -> bytes:
        data = self._blocks.get(index)
        if data is None:
            size = self.ranges.block
            data = self.ranges.read(index * size, size)
            self._blocks[index] = data
            while len(self._blocks) > KEPT_BLOCKS:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(index)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        with self._lock:
            want = min(len(view), max(0, self.ranges.size - self.pos))
            done = 0
            size = self.ranges.block
            while done < want:
                index, within = divmod(self.pos, size)
                block = self._block(index)
                n = min(want - done, len(block) - within)
                view[done:done + n] = block[within:within + n]
                done += n
                self.pos += n
            return done

    def read_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset``, straight from the source (no block kept): a large range
        read once."""
        return self.ranges.read(offset, n)

    def close(self) -> None:
        if not self.closed:
            self.ranges.close()
        super().close()


def open_source(ref: str, version: str | None = None, *, storage=None) -> RangeFile:
    """A ``RangeFile`` over source ``ref`` (see ``open_ranges``)."""
    return RangeFile(open_ranges(ref, version, storage=storage))
