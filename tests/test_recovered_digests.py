"""A chunk task whose raw chunk a decode task wrote checks it against the digest the coordinator
accepted, also when that decode task was recovered from the journal after a restart
(``coordinator.recovery``: ``Engine.restore_done``); and without digests it fails its read rather
than skipping the check."""

from __future__ import annotations

import pytest

from coordinator import engine as eng
from coordinator.engine import Engine
from coordinator.excamera_job import DIGESTS_REQUIRED, RAW_KEY, SourceInput, chunk_id, encode_job
from coordinator.journal import decode_outputs, encode_outputs
from common import ROOT
from media.excamera_encode import EncodeSettings
from storage import LocalStorage
from worker.ops import OpContext, OperationError, get_verified

GOP10 = ROOT / "tests" / "data" / "clips" / "compressed" / "carphone_176x144_36f_gop10.mp4"


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_recovered_decode_task_still_hands_its_digests_on(tmp_path):
    settings = EncodeSettings(chunk_frames=6, batch_chunks=2)
    source = SourceInput(str(GOP10), settings, reach_local=True)
    job = encode_job(source.n_frames, source.width, source.height, settings, source=source.plan)
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    e = Engine(Clock())
    e.add_job("j", job, storage, workers=1, spare=0, max_attempts=2, launcher=False)
    refs = {f"raw{i}": storage.put(RAW_KEY.format(chunk_id(i)), b"chunk %d" % i) for i in range(2)}
    # What the journal kept of decode-00000's result, read back as recovery reads it.
    outputs = decode_outputs(encode_outputs({"decode": refs}))
    assert e.restore_done("j", "decode-00000", outputs)
    for i in range(8):   # enough workers that every ready task is sent at once
        e.observe_connect("j", f"w{i}")
    sent = {a.task_id: a for a in e.step() if isinstance(a, eng.SendCommand)}
    assert "decode-00000" not in sent and {"chunk-00000", "chunk-00001"} <= set(sent)
    args = sent["chunk-00000"].args   # what the engine really hands the worker
    ref = refs["raw0"]
    assert args["verified"][0] == DIGESTS_REQUIRED
    assert f"{ref.key} {ref.sha256} {ref.size}" in args["verified"]
    ctx = OpContext("j", "chunk-00000", 1, storage)
    assert get_verified(ctx, ref.key, args["verified"]) == b"chunk 0"
    storage.put(ref.key, b"other bytes")
    with pytest.raises(OperationError, match="not the"):
        get_verified(ctx, ref.key, args["verified"])


def test_without_digests_a_checked_read_fails_rather_than_skips(tmp_path):
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    ref = storage.put("input/chunk-00000.y4m", b"raw")
    ctx = OpContext("j", "chunk-00000", 1, storage)
    assert get_verified(ctx, ref.key, []) == b"raw"            # a job whose inputs the client stored
    with pytest.raises(OperationError, match="not among the objects verified"):
        get_verified(ctx, ref.key, [DIGESTS_REQUIRED])         # ${after} came back empty
