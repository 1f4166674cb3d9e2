"""Shared test helpers: where the data is, the conformance vectors, .md5/.res parsing, tools.

Imported by the tests as ``common`` (``conftest.py`` puts this directory and the repository root
on ``sys.path``). Nothing here downloads anything or does I/O at import beyond listing files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
VP8_DIR = DATA / "vp8"
INVALID_DIR = VP8_DIR / "invalid"
WEBP_IVF_DIR = VP8_DIR / "webp" / "as_ivf"
CLIPS_DIR = DATA / "clips"
DEMO_IVF = ROOT / "demo" / "foreman_cif_60f.ivf"
BENCH_IVF = ROOT / "bench" / "data" / "bikes_640x272_250f.ivf"

#: The 62 libvpx vectors (vp80-00..05 and vp80-06-smallsize), then the 6 WebP key frames.
VECTORS: list[Path] = sorted(VP8_DIR.glob("vp80-*.ivf")) + sorted(WEBP_IVF_DIR.glob("*.ivf"))
#: Small vectors that also run with NUMBA_DISABLE_JIT=1 (the `nojit` lane of `make test`).
NOJIT_VECTORS = {"vp80-00-comprehensive-001", "blue-purple-pink"}
INVALID_STREAMS: list[Path] = sorted(INVALID_DIR.glob("*.ivf"))
CLIPS: list[Path] = sorted(CLIPS_DIR.glob("*.y4m"))


def stem(path: Path | str) -> str:
    """File name without ``.ivf``: the prefix of the names in its .md5 file."""
    name = os.path.basename(path)
    return name[:-4] if name.endswith(".ivf") else name


def vector_params(vectors: list[Path] = VECTORS) -> list:
    """``pytest.param`` per vector, id = stem, marked ``nojit`` for the small subset."""
    return [pytest.param(v, id=stem(v), marks=[pytest.mark.nojit] if stem(v) in NOJIT_VECTORS else [])
            for v in vectors]


@dataclass(frozen=True)
class Md5Line:
    md5: str
    name: str  # <stem>-<W>x<H>-<NNNN>.i420
    width: int
    height: int
    number: int  # NNNN: 1-based number of the IVF frame that showed the picture

    def __str__(self) -> str:
        return f"{self.md5}  {self.name}"


_NAME = re.compile(r"^(?P<stem>.+)-(?P<w>\d+)x(?P<h>\d+)-(?P<n>\d{4,})\.i420$")


def parse_md5_line(line: str) -> Md5Line:
    md5, name = line.split(None, 1)
    name = name.strip().lstrip("*")
    m = _NAME.match(name)
    if not m or not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise ValueError(f"not a per-frame md5 line: {line!r}")
    return Md5Line(md5, name, int(m["w"]), int(m["h"]), int(m["n"]))


def parse_md5(path: Path | str) -> list[Md5Line]:
    """A per-frame .md5 file (``md5sum`` output of vpxdec's ``%wx%h-%4`` files), sorted by NNNN
    (``md5sum *.i420`` lists them in name order, which differs once sizes change)."""
    with open(path) as f:
        lines = [parse_md5_line(l) for l in f if l.strip()]
    return sorted(lines, key=lambda l: l.number)


def md5_path(vector: Path) -> Path:
    return vector.with_name(vector.name + ".md5")


def parse_res(path: Path | str) -> list[int]:
    """libvpx's invalid_file_test expectations: one vpx_codec_err_t per frame (0 OK, 7 corrupt)."""
    with open(path) as f:
        return [int(l) for l in f if l.strip()]


def frame_line(image, vector_stem: str, index: int) -> str:
    """The .md5 line for a picture shown by IVF frame ``index`` (0-based)."""
    return f"{image.md5()}  {vector_stem}-{image.width}x{image.height}-{index + 1:04d}.i420"


def decode_lines(vector: Path, decoder=None, start: int = 0, stop: int | None = None) -> list[str]:
    """Decode IVF frames ``start..stop-1`` in process; the .md5 lines of the shown ones.
    ``decoder`` defaults to a fresh ``Decoder()``; frames before ``start`` are skipped unread."""
    from codec.decoder import Decoder
    from codec.ivf import IvfReader

    decoder = Decoder() if decoder is None else decoder
    out = []
    with IvfReader(vector) as reader:
        for frame in reader:
            if frame.index < start:
                continue
            if stop is not None and frame.index >= stop:
                break
            image = decoder.decode(frame.data)
            if image is not None:
                out.append(frame_line(image, stem(vector), frame.index))
    return out


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None


_PACKAGES = {"vpxdec": "vpx-tools", "vpxenc": "vpx-tools", "ffmpeg": "ffmpeg"}


def requires_tool(name: str):
    """Skip marker for tests that run an external tool, with the reason stated."""
    return pytest.mark.skipif(
        not have_tool(name),
        reason=f"{name} is not installed (apt-get install {_PACKAGES.get(name, name)})")


def subprocess_env() -> dict:
    """Environment for child Pythons: the repository importable even without `pip install -e`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# A child runs the Lambda handler's prepare_numba_cache(shipped, target), prints what it set and loaded.
_PREPARE = r"""
import json, os, sys
from awslambda.handler import prepare_numba_cache
from codec import aot
cache = prepare_numba_cache(sys.argv[1], sys.argv[2])
print(json.dumps({"cache": cache, "cpu_name": os.environ.get("NUMBA_CPU_NAME"),
                  "features": os.environ.get("NUMBA_CPU_FEATURES", ""), "compiled": aot.CPU,
                  "numba": "numba" in sys.modules, "copied": os.path.exists(os.path.join(cache, "codec"))}))
"""


def prepare_numba_cache_in_child(shipped, target, **env) -> dict:
    """``awslambda.handler.prepare_numba_cache`` in a fresh process (a test process has
    loaded the codec already), with no NUMBA_ or EXCAMERA_AOT settings but ``env``'s."""
    full = {k: v for k, v in subprocess_env().items() if not k.startswith(("NUMBA_", "EXCAMERA_AOT"))}
    full.update(env)
    p = subprocess.run([sys.executable, "-c", _PREPARE, str(shipped), str(target)], cwd=ROOT, env=full,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_cli(*args: str, cwd: Path | str | None = None, timeout: float = 300,
            input: bytes | None = None) -> subprocess.CompletedProcess:
    """``python -m excamera <args>``; stdout as bytes, stderr as text."""
    proc = subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], cwd=cwd or ROOT,
                          env=subprocess_env(), capture_output=True, timeout=timeout, input=input)
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


class S3Server:
    """A real S3 server on loopback (moto's ``ThreadedMotoServer``), reached through boto3 exactly
    as AWS is: ``env`` holds ``AWS_ENDPOINT_URL_S3`` and dummy credentials, and nothing from the
    user's ~/.aws. Started by the session fixture ``s3_server`` (conftest.py)."""

    def __init__(self):
        import logging

        from moto.server import ThreadedMotoServer  # moto[server], flask, flask-cors: the test extra

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def client(self):
        import boto3

        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                     region_name="us-east-1").client("s3", endpoint_url=self.endpoint)

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new); its name."""
        client = self.client()
        if name not in {b["Name"] for b in client.list_buckets().get("Buckets", ())}:
            client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def stop(self) -> None:
        self._server.stop()


def ffmpeg_yuv(inputs: list, args: list[str]) -> bytes:
    """ffmpeg's own raw yuv420p output for ``-i`` each of ``inputs`` followed by ``args``."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    for path in inputs:
        cmd += ["-i", str(path)]
    return subprocess.run(cmd + list(args) + ["-pix_fmt", "yuv420p", "-f", "rawvideo", "-"],
                          capture_output=True, check=True, timeout=120).stdout


def sigint_default() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: the signal's default action.
    A test run started in the background by a non-interactive shell has SIGINT ignored, the child
    inherits that, and Python then installs no KeyboardInterrupt handler: the signal would be lost."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)
