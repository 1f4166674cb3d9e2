"""``Storage`` on S3 (or any S3-compatible server): ``s3://BUCKET/PREFIX``.

Every key lives under the configured prefix and is checked by ``check_key`` first, so a key can
no more leave the prefix here than it can leave a ``LocalStorage`` root. A put is one
``PutObject`` (atomic: readers see the old object or the new one, never half) or, from
``multipart_threshold`` bytes on, a multipart upload, which S3 also makes visible only when it
completes. Large gets are ranged and parallel. Which account, region and endpoint come only from
boto3's standard chain (profiles, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``, ...), so any S3-compatible
server works without a flag of ours. A put sends the object's SHA-256 (``ChecksumSHA256``), which
S3 checks against the bytes it receives and keeps; ``stat`` reads it back (``HeadObject``), so
the coordinator verifies a reported object without reading it. ``digest`` always re-reads and
re-hashes the bytes (an object written without the checksum is verified that way).

boto3 is imported only when an ``S3Storage`` is made: ``excamera --help`` and local jobs never
pay for it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import threading

from storage.core import ObjectRef, Storage, StorageError, check_key

#: Objects from this size on go up and down in parts, in parallel.
MULTIPART_THRESHOLD = 64 << 20
#: Part size of those transfers.
MULTIPART_CHUNK = 16 << 20
#: At most this many keys per DeleteObjects request (S3's limit).
DELETE_BATCH = 1000


_loader = None   # botocore's data loader, shared by every session of this process (boto3_session)
_loader_lock = threading.Lock()


def boto3_session():
    """A new boto3 session (its own credentials and settings, from boto3's standard chain as
    ever) that shares this process's botocore data loader: the endpoint table and the service
    models, megabytes of JSON, are then read and parsed once per process instead of once per
    session (a client, its storage, its source, its output and its Lambda launcher each make one;
    docs/design/data-path.md)."""
    import boto3
    import botocore.session

    global _loader
    core = botocore.session.get_session()
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
        session = boto3.session.Session(botocore_session=core)
        _loader.search_paths[:] = dict.fromkeys(_loader.search_paths)  # boto3 adds its path each time
    return session


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET[/PREFIX]``; StorageError saying what is wrong."""
    if not url.startswith("s3://"):
        raise StorageError(f"{url}: not an s3://BUCKET/PREFIX URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    # S3's bucket naming rules, loosely: 3..63 lowercase letters, digits, dots and hyphens.
    if not (3 <= len(bucket) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket) \
            or not bucket[0].isalnum() or not bucket[-1].isalnum():
        raise StorageError(f"{url}: {bucket!r} is not a valid bucket name "
                           f"(3-63 characters: a-z, 0-9, '.', '-')")
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except StorageError as e:
            raise StorageError(f"{url}: prefix {prefix!r}: {str(e).split(': ', 1)[-1]}") from None
    return bucket, prefix


def _s3_error(e: Exception, url: str, bucket: str, what: str, subject: str) -> StorageError:
    """One line for a botocore error met while working on ``subject`` (``"object"``, ``"bucket"``
    or ``"upload"``, a multipart upload) of ``url``; ``what`` names it as the caller knows it."""
    from botocore.exceptions import ClientError, NoCredentialsError

    code = _error_code(e)
    if isinstance(e, ClientError):
        missing = code in ("404", "NotFound")
        if subject == "object" and (code == "NoSuchKey" or missing):
            return StorageError(f"{what}: no such object")
        if code == "NoSuchBucket" or (subject == "bucket" and missing):
            return StorageError(f"{url}: no such bucket {bucket!r}")
        if subject == "upload" and code == "NoSuchUpload":
            return StorageError(f"{url}: the multipart upload is gone (aborted, or completed already)")
        if code in ("AccessDenied", "403", "Forbidden"):
            by = f" by {url}" if what != url else ""
            return StorageError(f"{what}: access denied{by} (check the IAM permissions)")
        message = e.response.get("Error", {}).get("Message", "") or str(e)
        return StorageError(f"{what}: {code}: {' '.join(message.split())}")
    if isinstance(e, NoCredentialsError):
        return StorageError(f"{url}: no AWS credentials (configure a profile, AWS_ACCESS_KEY_ID "
                            f"and AWS_SECRET_ACCESS_KEY, or a role)")
    return StorageError(f"{what}: {' '.join(str(e).split()) or type(e).__name__}")


def _error_code(e) -> str:
    return str(e.response.get("Error", {}).get("Code", "")) if hasattr(e, "response") else ""


class S3Storage(Storage):
    """Objects in ``bucket`` under ``prefix``. ``concurrency``: how many requests at once this
    storage should carry (the connection pool, and the parts of one large transfer)."""

    def __init__(self, bucket: str, prefix: str = "", *, concurrency: int = 10,
                 multipart_threshold: int = MULTIPART_THRESHOLD, client=None):
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = check_key(prefix.strip("/")) + "/" if prefix.strip("/") else ""
        concurrency = max(1, concurrency)
        self._session = boto3_session()  # (its loaded S3 model serves check()'s client too)
        self.client = client or self._session.client(
            "s3", config=Config(max_pool_connections=max(10, concurrency),
                                retries={"mode": "standard"}))
        self.multipart_threshold = multipart_threshold
        chunk = min(MULTIPART_CHUNK, max(5 << 20, multipart_threshold))  # S3's smallest part: 5 MiB
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=chunk,
                                       max_concurrency=concurrency, use_threads=concurrency > 1)

    @classmethod
    def from_url(cls, url: str, **kw) -> "S3Storage":
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, **kw)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.rstrip('/')}".rstrip("/")

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _fail(self, e: Exception, key: str | None) -> StorageError:
        """One line for a botocore error, naming the key as the caller knows it."""
        what = f"storage key {key!r}" if key is not None else self.url
        return _s3_error(e, self.url, self.bucket, what, "object" if key is not None else "bucket")

    # -- the interface ---------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import S3DownloadFailedError

        full = self._full(key)
        for attempt in range(3):
            try:
                r = self.client.get_object(Bucket=self.bucket, Key=full)
                if r["ContentLength"] < self.multipart_threshold:
                    return r["Body"].read()
                r["Body"].close()  # large: fetch it again in parallel ranges
                buf = io.BytesIO()
                self.client.download_fileobj(self.bucket, full, buf, Config=self.transfer)
                return buf.getvalue()
            except (BotoCoreError, ClientError) as e:
                raise self._fail(e, key) from None
            except S3DownloadFailedError as e:
                # The ranges are pinned to one ETag: the object was replaced mid-read. Read the
                # new one whole rather than mix the two.
                if attempt == 2:
                    raise self._fail(e, key) from None
        raise AssertionError("unreachable")

    def put(self, key: str, data: bytes) -> ObjectRef:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._full(key)
        sha = hashlib.sha256(data)
        try:
            if len(data) < self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=full, Body=bytes(data), ChecksumAlgorithm="SHA256",
                                       ChecksumSHA256=base64.b64encode(sha.digest()).decode())
            else:  # visible only once complete; s3transfer aborts the upload on failure
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, full, Config=self.transfer)
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, key) from None
        return ObjectRef(key, sha.hexdigest(), len(data))

    def stat(self, key: str) -> ObjectRef:
        """Size and the SHA-256 S3 checked on upload (``ChecksumSHA256`` of a whole object; a
        multipart one's is of its parts: '' then, as for an object put without one)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key), ChecksumMode="ENABLED")
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, key) from None
        checksum = head.get("ChecksumSHA256") or ""
        sha = ""
        if checksum and "-" not in checksum and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            try:
                sha = base64.b64decode(checksum, validate=True).hex()
            except ValueError:
                sha = ""
        return ObjectRef(key, sha if len(sha) == 64 else "", int(head["ContentLength"]))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            return True
        except ClientError as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(e, key) from None
        except BotoCoreError as e:
            raise self._fail(e, key) from None

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, key) from None

    def _list_full(self, prefix: str) -> list[str]:
        """Every full key under directory ``prefix`` (relative to this storage's prefix)."""
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = prefix.rstrip("/")  # (a leading '/' is refused by check_key, as locally)
        base = self.prefix + (check_key(prefix) + "/" if prefix else "")
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                out.extend(o["Key"] for o in page.get("Contents", ()))
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, None) from None
        return sorted(out)

    def list(self, prefix: str = "") -> list[str]:
        return [k[len(self.prefix):] for k in self._list_full(prefix)]

    def delete_prefix(self, prefix: str = "") -> int:
        """Remove every object under ``prefix``, whatever its name, in batches; how many."""
        from botocore.exceptions import BotoCoreError, ClientError

        keys = self._list_full(prefix)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            try:
                r = self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": k} for k in batch], "Quiet": True})
            except (BotoCoreError, ClientError) as e:
                raise self._fail(e, None) from None
            if r.get("Errors"):
                err = r["Errors"][0]
                raise StorageError(f"{self.url}: deleting {err.get('Key')!r}: {err.get('Code')}: "
                                   f"{err.get('Message')}")
        return len(keys)

    def digest(self, key: str) -> ObjectRef:
        data = self.get(key)  # re-read: a writer's word is not verification
        return ObjectRef(key, hashlib.sha256(data).hexdigest(), len(data))

    def check(self, timeout_s: float = 3.0) -> None:
        """A quick pre-flight before a job: the bucket exists and this identity may list, write
        and delete under the prefix (a probe object, removed at once). Short timeouts and two tries,
        so a wrong endpoint fails in seconds, not after the standard retries."""
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        probe = self._session.client("s3", config=Config(
            connect_timeout=timeout_s, read_timeout=timeout_s,
            retries={"mode": "standard", "max_attempts": 2}))
        key = f"{self.prefix}excamera-probe-{secrets.token_hex(6)}"
        try:
            # A list within the prefix rather than HeadBucket: the least privilege (ListBucket
            # under the prefix only) allows it, and a missing bucket answers NoSuchBucket.
            probe.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
            probe.put_object(Bucket=self.bucket, Key=key, Body=b"")
            probe.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e, None) from None


# -- one output object written in parts (``excamera encode -o s3://BUCKET/KEY``) -------------------

#: S3's smallest part but the last (``EntityTooSmall`` below it), and its most parts an upload.
PART_MIN = 5 << 20
MAX_PARTS = 10000


def parse_object_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://BUCKET/KEY``; StorageError saying what is wrong."""
    bucket, key = parse_s3_url(url)
    if not key:
        raise StorageError(f"{url}: names a bucket but no object (s3://BUCKET/KEY)")
    return bucket, key


class MultipartOutput:
    """One S3 object ``url`` made of parts that several processes upload: whoever starts it
    (``start``) hands ``upload_id`` on; each part goes up where its bytes are
    (``put_part``), and nothing is visible at ``url`` until ``complete``. ``abort`` drops every
    part uploaded (S3 keeps the parts of an upload left open, and bills them, until it is
    aborted; a bucket lifecycle rule ``AbortIncompleteMultipartUpload`` covers a client that
    died before it could abort). Errors are StorageError, one line naming ``url``."""

    def __init__(self, url: str, upload_id: str = "", client=None):
        self.url = url
        self.bucket, self.key = parse_object_url(url)
        self.upload_id = upload_id
        if client is None:
            from botocore.config import Config

            client = boto3_session().client("s3", config=Config(retries={"mode": "standard"}))
        self.client = client

    def _fail(self, e: Exception) -> StorageError:
        return _s3_error(e, self.url, self.bucket, self.url, "upload")

    def _call(self, method: str, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self.key, **kw)
        except (BotoCoreError, ClientError) as e:
            raise self._fail(e) from None

    def start(self) -> str:
        """A new upload (CreateMultipartUpload, SHA-256 checked per part); its id."""
        self.upload_id = self._call("create_multipart_upload", ChecksumAlgorithm="SHA256")["UploadId"]
        return self.upload_id

    def put_part(self, number: int, data: bytes) -> str:
        """Part ``number`` (1..10000) from ``data``, S3 checking its SHA-256; the part's ETag.
        Sent again, a part replaces the one before (a re-issued task uploads the same bytes)."""
        if not 1 <= number <= MAX_PARTS:
            raise StorageError(f"{self.url}: part {number} out of 1..{MAX_PARTS}")
        sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
        r = self._call("upload_part", UploadId=self.upload_id, PartNumber=number, Body=bytes(data),
                       ChecksumAlgorithm="SHA256", ChecksumSHA256=sha)
        return r["ETag"]

    def parts(self) -> dict[int, tuple[str, int, str]]:
        """Part number -> (ETag, size, base64 SHA-256 or '') of every part S3 holds now."""
        out, marker = {}, 0
        while True:
            r = self._call("list_parts", UploadId=self.upload_id, PartNumberMarker=marker)
            for p in r.get("Parts", ()):
                out[int(p["PartNumber"])] = (p["ETag"], int(p["Size"]), p.get("ChecksumSHA256", ""))
            if not r.get("IsTruncated"):
                return out
            marker = int(r["NextPartNumberMarker"])

    def complete(self, sizes: list[int]) -> None:
        """Make the object visible from parts 1..len(sizes), each of the size given: refused
        (StorageError, the upload left for ``abort``) if S3 holds other parts or sizes."""
        held = self.parts()
        if sorted(held) != list(range(1, len(sizes) + 1)):
            raise StorageError(f"{self.url}: the upload holds parts {sorted(held)[:8]}..., "
                               f"not 1..{len(sizes)}")
        for n, size in enumerate(sizes, 1):
            if held[n][1] != size:
                raise StorageError(f"{self.url}: part {n} holds {held[n][1]} bytes, not the {size} assembled")
        listed = []
        for n in range(1, len(sizes) + 1):
            part = {"PartNumber": n, "ETag": held[n][0]}
            if held[n][2]:
                part["ChecksumSHA256"] = held[n][2]
            listed.append(part)
        self._call("complete_multipart_upload", UploadId=self.upload_id, MultipartUpload={"Parts": listed})

    def abort(self) -> None:
        """Drop the upload and its parts (nothing to do when none was started)."""
        if self.upload_id:
            self._call("abort_multipart_upload", UploadId=self.upload_id)

    def discard(self, completed: bool = False, warn=None) -> None:
        """A run that failed leaves nothing: the upload aborted, or, ``completed`` (its join
        made the object before another output failed), the object deleted. A failure to do so
        goes to ``warn`` as one line (raised without one)."""
        try:
            if completed:
                self._call("delete_object")
            else:
                self.abort()
        except StorageError as e:
            if warn is None:
                raise
            warn(f"could not remove the upload ({e})")
