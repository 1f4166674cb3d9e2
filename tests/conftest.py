"""pytest setup: make ``common`` and the repository importable, and register markers."""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# A coordinator daemon's journal (and a client's book of job keys) defaults to $XDG_STATE_HOME:
# tests keep theirs out of the user's, one directory per session.
if "EXCAMERA_TEST_STATE" not in os.environ:
    os.environ["EXCAMERA_TEST_STATE"] = os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="excamera-test-state-")
for p in (str(HERE), str(HERE.parent)):
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_configure(config):
    config.addinivalue_line("markers", "nojit: small subset that also runs with NUMBA_DISABLE_JIT=1")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server on 127.0.0.1 for the whole session (``common.S3Server``)."""
    from common import S3Server

    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3env(s3_server, monkeypatch):
    """The S3 server's endpoint and credentials in this test's environment, as boto3 reads them
    (and no profile or session token of the machine's own)."""
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture
def s3_child_env(s3_server):
    """A child process's environment: the repository importable, AWS pointed at the S3 server
    (and no profile or session token of the machine's own)."""
    from common import subprocess_env

    e = subprocess_env()
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        e.pop(k, None)
    e.update(s3_server.env)
    return e
