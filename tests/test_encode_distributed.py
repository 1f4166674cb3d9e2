"""`excamera encode --workers N`: the ExCamera[N, x] job over the real codec operations on the
distributed runtime. The output must be byte-identical to `--workers 0` (``encode_frames``), with
any number of workers, whatever workers are killed, and never a success with a chunk that does
not chain."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from codec.chunks import frame_tag
from codec.y4m import read_y4m
from common import CLIPS_DIR, requires_tool
from coordinator.api import JobFailed, RunConfig, embedded_coordinator, run_job
from coordinator.excamera_job import OUT_KEY, SpooledInput, chunk_fsm, chunk_id, encode_inputs, encode_job
from coordinator.fsm import DONE, Job, fill
from media.excamera_encode import EncodeSettings, chunk_ranges, encode_frames, given_state_frame, rebase_chunk
from storage import LocalStorage, ObjectRef
from worker.codec_ops import ivf_frames
from worker.ops import DEFAULT, OpContext, OperationError

TESTS = Path(__file__).resolve().parent
CLIP = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"   # 80x44, 15 frames: 5 MBs x 3 MB rows


@pytest.fixture(scope="module")
def clip():
    header, frames = read_y4m(CLIP)
    return frames, header.rate


def run(*args):
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], capture_output=True, text=True)


def distributed(frames, rate, settings, tmp_path, **kw):
    """The stream the runtime job makes (workers, spare, ... as run_job takes them)."""
    h, w = frames[0].y.shape
    r = run_job(encode_job(len(frames), w, h, settings),
                RunConfig(storage=str(tmp_path / "storage"), timeout_s=240, **kw),
                inputs=encode_inputs(frames, rate, settings), ops_modules=("worker.codec_ops",))
    return ivf_frames(r.read("stitch"), "stitched"), r


# -- the split steps, in one process ---------------------------------------------------------

@pytest.mark.parametrize("first_pass", ["native", "libvpx"])
def test_split_steps_equal_reencode_chunk(clip, first_pass):
    """given_state_frame (parallel) + rebase_chunk (serial) are reencode_chunk cut in two: the
    ExCamera loop written with them gives encode_frames' bytes, states passing through to_bytes."""
    from codec.state import DecoderState
    from media.excamera_encode import exit_state, first_pass as encode_first_pass

    frames, rate = clip
    settings = EncodeSettings(chunk_frames=4, batch_chunks=3, cq_level=30, first_pass=first_pass)
    wire = lambda s: DecoderState.from_bytes(s.to_bytes())  # noqa: E731 - what the rendezvous carries
    ranges = chunk_ranges(len(frames), settings)
    passes = [encode_first_pass(frames[a:b], settings, rate) for a, b in ranges]
    given = [wire(exit_state(p)) for p in passes]
    out, state = [], None
    for i, (a, b) in enumerate(ranges):
        if i % settings.batch_chunks == 0:
            chunk, state = passes[i], given[i]
        else:
            first = given_state_frame(given[i - 1], frames[a], passes[i], settings)
            chunk, state = rebase_chunk(state, given[i - 1], first, frames[a:b], passes[i])
            state = wire(state)
        out.extend(chunk)
    assert out == encode_frames(frames, settings, rate)
    assert [frame_tag(d).key_frame for d in out] == [i % 12 == 0 for i in range(15)]


class _Mailboxes:
    """An in-memory stand-in for the rendezvous client (send, receive with keep)."""

    def __init__(self):
        self.held = {}

    async def send(self, sender, recipient, tag, data, compress="auto"):
        return self.held.setdefault((sender, recipient, tag), data) is data

    async def receive(self, recipient, sender, tag, timeout_s=60.0, keep=False):
        return self.held[(sender, recipient, tag)]


def test_job_fsm_run_in_process_equals_workers_0(clip, tmp_path):
    """Every chunk's FSM, state by state with its templated arguments, through the registry (no
    processes): the stitched object is encode_frames' stream, and each object is where it says."""
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=3, batch_chunks=2, cq_level=24, first_pass="native")
    h, w = frames[0].y.shape
    job = encode_job(len(frames), w, h, settings)
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    for key, data in encode_inputs(frames, rate, settings).items():
        storage.put(key, data)
    relay = _Mailboxes()
    reported = {}  # task -> the objects it reported (what the engine hands on as ${after})
    for task in job.tasks:  # in order: a chunk's predecessor has always run before it
        fsm = job.fsm(task.fsm)
        ctx = OpContext("j", task.task_id, 1, storage, relay)
        name, outputs = fsm.initial, {}
        after = [f"{v.key} {v.sha256} {v.size}" for d in task.after for v in reported[d]]
        while name != DONE:
            state = fsm.state(name)
            context = dict(task.params, task_id=task.task_id, job_id="j", attempt=1, after=after, **outputs)
            out = asyncio.run(DEFAULT.call(state.operation, ctx, fill(state.args, context)))
            outputs.update({f"{name}.{k}": v for k, v in out.items()})
            name = fsm.next_state(name, out.get("outcome", "ok"))
        reported[task.task_id] = [v for v in outputs.values() if isinstance(v, ObjectRef)]
    stitched = ivf_frames(storage.get("output.ivf"), "stitched")
    assert stitched == encode_frames(frames, settings, rate)
    assert outputs["stitch.decoded"] is False  # every chunk left its link: the chain was proved from them
    # Batches of 2: chunks 0, 2, 4 keep their key frames; 1 and 3 were rebased.
    assert [frame_tag(ivf_frames(storage.get(OUT_KEY.format(chunk_id(i))), "c")[0]).key_frame
            for i in range(5)] == [True, False, True, False, True]


def test_batch_rebase_refuses_objects_other_than_those_accepted(clip, tmp_path):
    """The batch's rebase task reads what its chunk tasks stored, each checked against the digest
    the coordinator accepted (``${after}``): another given-state frame, or none accepted at all
    (a recovered task without its digests), fails it naming the object."""
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=5, batch_chunks=3, cq_level=30, first_pass="native")
    h, w = frames[0].y.shape
    job = encode_job(len(frames), w, h, settings)
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    for key, data in encode_inputs(frames, rate, settings).items():
        storage.put(key, data)
    relay, reported = _Mailboxes(), []
    for task in job.tasks:
        if task.fsm != "excamera-encode-chunk":
            continue
        fsm, name, outputs = job.fsm(task.fsm), job.fsm(task.fsm).initial, {}
        ctx = OpContext("j", task.task_id, 1, storage, relay)
        while name != DONE:
            context = dict(task.params, task_id=task.task_id, job_id="j", attempt=1, after=[], **outputs)
            out = asyncio.run(DEFAULT.call(fsm.state(name).operation, ctx, fill(fsm.state(name).args, context)))
            outputs.update({f"{name}.{k}": v for k, v in out.items()})
            name = fsm.next_state(name, "ok")
        reported += [f"{v.key} {v.sha256} {v.size}" for v in outputs.values() if isinstance(v, ObjectRef)]
    (rebase,) = [t for t in job.tasks if t.fsm == "excamera-encode-rebase"]
    state = job.fsm(rebase.fsm).state("rebase")

    def walk(after):
        args = fill(state.args, dict(rebase.params, task_id=rebase.task_id, job_id="j", attempt=1, after=after))
        return asyncio.run(DEFAULT.call(state.operation, OpContext("j", rebase.task_id, 1, storage), args))

    given = rebase.params["givens"][2]
    good = storage.get(given)
    storage.put(given, good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(OperationError, match=f"storage key '{given}': holds .* not the .* verified"):
        walk(reported)
    storage.put(given, good)
    with pytest.raises(OperationError, match="not among the objects verified"):
        walk([])
    out = walk(reported)
    assert [out[f"chunk-{j:05d}"].key for j in range(3)] == [OUT_KEY.format(chunk_id(j)) for j in range(3)]


def stored_chunks(clip, tmp_path, batch_chunks):
    """Chunk objects as the job uploads them (the stream cut at its chunks, entry digests in their
    headers), each with its link beside it: (storage, stitch context, the stream, chunk keys,
    link keys, the final state)."""
    from codec.chunks import ChunkLink, entry_digest_bytes
    from media.excamera_encode import exit_state
    from worker.codec_ops import ivf_bytes
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=3, batch_chunks=batch_chunks, cq_level=24, first_pass="native")
    h, w = frames[0].y.shape
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    data = encode_frames(frames, settings, rate)
    keys, links, state = [], [], None
    for i, (a, b) in enumerate(chunk_ranges(len(frames), settings)):
        key, link = OUT_KEY.format(chunk_id(i)), f"out/{chunk_id(i)}.link"
        entry = None if frame_tag(data[a]).key_frame else state
        chunk = ivf_bytes(data[a:b], w, h, rate, entry_digest_bytes(entry))
        storage.put(key, chunk)
        state = exit_state(data[:b])
        storage.put(link, ChunkLink(hashlib.sha256(chunk).hexdigest(), entry.digest() if entry else "",
                                    state.digest()).to_bytes())
        keys.append(key)
        links.append(link)
    return storage, OpContext("j", "stitch", 1, storage), data, keys, links, state


def test_stitch_refuses_chunks_that_do_not_chain_or_are_missing(clip, tmp_path):
    storage, ctx, data, keys, _, _ = stored_chunks(clip, tmp_path, batch_chunks=5)
    op = DEFAULT.get("vp8-stitch").fn
    out = op(ctx, chunks=keys, output="ok.ivf", frames=15)
    assert ivf_frames(storage.get("ok.ivf"), "ok") == data and out["frames"] == 15
    swapped = [keys[0], keys[2], keys[1]] + keys[3:]
    with pytest.raises(OperationError, match=r"chunk 1 expects to start from decoder state [0-9a-f]{8} but"):
        op(ctx, chunks=swapped, output="bad.ivf", frames=15)
    with pytest.raises(OperationError, match="the chunks show 12 frames, the input has 15"):
        op(ctx, chunks=keys[:4], output="bad.ivf", frames=15)
    with pytest.raises(ValueError, match="no such object"):
        op(ctx, chunks=keys[:2] + ["out/chunk-99999.ivf"] + keys[3:], output="bad.ivf", frames=15)
    assert not storage.exists("bad.ivf")


def test_stitch_proves_the_chain_from_links_and_decodes_where_one_does_not_fit(clip, tmp_path, monkeypatch):
    """With every chunk's link (its hash, entry and exit digests in full) the stitch reads frame
    tags only; a link missing, a chunk that is not the one its link hashed, or links that do not
    chain send it back to decoding, which gives the same stream or the same refusal."""
    import codec.chunks
    from codec.chunks import ChunkLink
    storage, ctx, data, keys, links, state = stored_chunks(clip, tmp_path, batch_chunks=2)
    op = DEFAULT.get("vp8-stitch").fn
    decodes = []
    real = codec.chunks.decode_frame
    monkeypatch.setattr(codec.chunks, "decode_frame", lambda *a: decodes.append(1) or real(*a))
    out = op(ctx, chunks=keys, links=links, output="linked.ivf", frames=15)
    assert not decodes and out["decoded"] is False and out["digest"] == state.digest()
    assert ivf_frames(storage.get("linked.ivf"), "linked") == data
    # A link missing, or one that is not its chunk's (its hash does not fit): decoded, same stream.
    saved = storage.get(links[3])
    for broken in ("missing", "another chunk's"):
        if broken == "missing":
            storage.delete(links[3])
        else:
            storage.put(links[3], storage.get(links[1]))
        out = op(ctx, chunks=keys, links=links, output="decoded.ivf", frames=15)
        assert out["decoded"] is True and out["digest"] == state.digest()
        assert ivf_frames(storage.get("decoded.ivf"), broken) == data
    storage.put(links[3], saved)
    assert op(ctx, chunks=keys, links=links, output="linked.ivf", frames=15)["decoded"] is False
    # Chunks out of order, each with its own (true) link: the links do not chain, the decode refuses.
    order = [0, 2, 1, 3, 4]  # (chunk 2 begins a batch with a key frame: it may follow anything)
    with pytest.raises(OperationError, match=r"chunk 2 expects to start from decoder state [0-9a-f]{8} but"):
        op(ctx, chunks=[keys[i] for i in order], links=[links[i] for i in order], output="bad.ivf", frames=15)
    assert not storage.exists("bad.ivf")
    with pytest.raises(OperationError, match="2 links for 5 chunks"):
        op(ctx, chunks=keys, links=links[:2], output="bad.ivf", frames=15)


def test_reissued_first_pass_takes_the_stored_one(clip, tmp_path):
    """A re-issued attempt hands on the first pass its lost predecessor stored, not a new one."""
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=3, batch_chunks=2, cq_level=24, first_pass="native")
    storage = LocalStorage(tmp_path).scoped("jobs/j")
    for key, data in encode_inputs(frames, rate, settings).items():
        storage.put(key, data)
    op = DEFAULT.get("vp8-first-pass").fn
    args = dict(raw="input/chunk-00001.y4m", output="pass/chunk-00001.ivf", first_pass="native", cq_level=24)
    first = op(OpContext("j", "chunk-00001", 1, storage), **args)
    assert first["reused"] is False and first["frames"] == 3
    other = op(OpContext("j", "chunk-00000", 1, storage), **dict(args, raw="input/chunk-00000.y4m",
                                                                   output="pass/chunk-00000.ivf"))
    storage.put("pass/chunk-00001.ivf", storage.get("pass/chunk-00000.ivf"))  # tell the two apart
    ctx = OpContext("j", "chunk-00001", 2, storage)
    again = op(ctx, **args)
    assert again["reused"] is True and again["object"] == dataclasses.replace(other["object"], key=args["output"])
    assert ctx.scratch["pass"] == storage.get("pass/chunk-00000.ivf")
    # A first attempt always encodes (an object left by an earlier job cannot be in this prefix).
    assert op(OpContext("j", "chunk-00001", 1, storage), **args)["object"] == first["object"]


# -- on worker processes -----------------------------------------------------------------------

def first_pass_report(result, frames, rate, settings) -> str:
    """Why a distributed output differs: the chunks whose stored first pass is not what this
    process's first pass gives (they must all agree; tests/test_firstpass_heap.py)."""
    from coordinator.excamera_job import PASS_KEY
    from media.excamera_encode import first_pass
    storage = LocalStorage(result.storage_root).scoped(result.storage_prefix)
    differ = [i for i, (a, b) in enumerate(chunk_ranges(len(frames), settings))
              if ivf_frames(storage.get(PASS_KEY.format(chunk_id(i))), "pass") != first_pass(frames[a:b], settings, rate)]
    return f"output differs; chunks whose first pass differs from this process's: {differ or 'none'}"


@pytest.mark.parametrize("workers,first_pass,n,x", [
    (2, "libvpx", 4, 3),
    pytest.param(1, "native", 3, 2, marks=pytest.mark.slow),
    pytest.param(4, "native", 2, 3, marks=pytest.mark.slow),
    pytest.param(4, "libvpx", 3, 2, marks=pytest.mark.slow),
])
def test_workers_n_byte_identical_to_workers_0(clip, tmp_path, workers, first_pass, n, x):
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=n, batch_chunks=x, cq_level=30, first_pass=first_pass)
    out, r = distributed(frames, rate, settings, tmp_path, workers=workers)
    expected = encode_frames(frames, settings, rate)
    assert out == expected, first_pass_report(r, frames, rate, settings)
    assert sum(frame_tag(d).key_frame for d in out) == -(-len(chunk_ranges(15, settings)) // x)
    # Every edge of the chunk FSM was taken by a winning attempt; no more workers than asked.
    pairs = {(s[1], t[1]) for tid, attempts in r.timeline["tasks"].items() if tid.startswith("chunk-")
             for a in attempts if a["status"] == "succeeded" for s, t in zip(a["history"], a["history"][1:])}
    assert pairs == {(a, b) for a, _, b in chunk_fsm(1, 1).edges()}
    # (a short job may end before the last worker process has even registered)
    assert 1 <= len(r.timeline["workers"]) <= workers


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_workers_at_random_moments(clip, tmp_path, seed):
    """Workers are killed with SIGKILL at random moments; the job still finishes, byte-identical.

    A worker's cold start (loading the numba kernels) outlasts the rest of a job this small, so
    purely random times would nearly always hit the first pass: each kill is either at a random
    time or, chosen at random, the moment some chunk is in a randomly chosen state of its FSM
    (the serial wait and rebase included)."""
    rng = random.Random(seed)
    frames, rate = clip
    # The default libvpx first pass too: a re-issued first pass must give the same bytes.
    settings = EncodeSettings(chunk_frames=2, batch_chunks=4, cq_level=30,
                              first_pass="libvpx" if seed == 3 else "native")
    h, w = frames[0].y.shape
    expected = encode_frames(frames, settings, rate)
    states = [st.name for st in chunk_fsm(1, 1).states]

    async def go():
        async with embedded_coordinator(str(tmp_path), ops_modules=("worker.codec_ops",)) as c:
            job_id, _ = await c.submit(encode_job(len(frames), w, h, settings), workers=3, spare=1,
                                       inputs=encode_inputs(frames, rate, settings))
            done = asyncio.ensure_future(c.wait(job_id))
            job = c.engine.jobs[job_id]

            def running():  # pid -> "task:state" of every worker with an attempt running
                return {int(c.engine.workers[a.worker_id].name.rsplit("pid ", 1)[1].rstrip(")")):
                        f"{t.spec.task_id}:{a.state}" for t in job.tasks.values() for a in t.running()}

            kills = []
            while len(kills) < 3 and not done.done():
                target = rng.choice(states + ["any time"])
                if target == "any time":
                    await asyncio.sleep(rng.uniform(0.0, 1.5))
                    pids = list(running())
                else:
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    pids = []
                    for _ in range(2000):  # up to ~10 s for some chunk to be in that state
                        pids = [p for p, where in running().items() if where.endswith(":" + target)]
                        if pids or done.done():
                            break
                        await asyncio.sleep(0.005)
                pids = [p for p in pids if p in c.launcher.pids(job_id)]
                if pids and not done.done():
                    pid = rng.choice(pids)
                    try:
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except FileNotFoundError:
                        cmdline = b""
                    if not cmdline:  # the worker has just exited (idle): a zombie, or gone
                        continue
                    assert b"worker" in cmdline.split(b"\0")
                    where = running().get(pid, "idle")
                    os.kill(pid, signal.SIGKILL)
                    kills.append(where)
            outcome = await asyncio.wait_for(done, 240)
            return outcome, kills, sum(t.lost for t in job.tasks.values())

    outcome, kills, lost = asyncio.run(go())
    assert outcome.status == "succeeded", outcome.error
    # Up to three kills (the job may end first); the first always lands (nothing has run yet).
    assert kills and lost >= 1, kills  # the kills really interrupted tasks
    print("killed during", kills)
    ref = outcome.objects["stitch"]["stitch.object"]
    data = (Path(outcome.storage_root) / outcome.storage_prefix / ref.key).read_bytes()
    assert ivf_frames(data, "stitched") == expected


def test_never_success_with_a_chunk_rebased_onto_the_wrong_state(clip, tmp_path, monkeypatch):
    """A worker that uploads its chunk coded onto the previous chunk's first-pass state (not the
    state it really left) makes the job fail at the stitch, naming the chunk."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=5, batch_chunks=3, cq_level=30, first_pass="native")
    h, w = frames[0].y.shape
    base = encode_job(len(frames), w, h, settings)
    good = base.fsm("excamera-encode-rebase")
    bad = dataclasses.replace(good, name="broken-rebase", states=tuple(
        dataclasses.replace(s, operation="test-rebase-onto-given") if s.name == "rebase" else s
        for s in good.states))
    # (chunk 2 is the last of the first batch: the broken walk codes it onto chunk 1's first pass)
    tasks = tuple(dataclasses.replace(t, fsm="broken-rebase") if t.task_id == "rebase-00000" else t
                  for t in base.tasks)
    job = Job(base.name, base.fsms + (bad,), tasks, base.result_tasks)
    with pytest.raises(JobFailed, match=r"task stitch failed .*chunk 2 expects to start from decoder state"):
        run_job(job, RunConfig(workers=2, storage=str(tmp_path), max_attempts=1, timeout_s=240),
                inputs=encode_inputs(frames, rate, settings), ops_modules=("worker.codec_ops", "codec_test_ops"))


# -- the command line ----------------------------------------------------------------------------

def webm_packets(path):
    import av
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]


def test_cli_workers_2_same_bytes_as_workers_0_ivf_and_webm(tmp_path):
    common = ["--chunk-frames", 4, "--batch-chunks", 2, "--cq-level", 28, "--first-pass", "native"]
    for ext in ("ivf", "webm"):
        zero, two = tmp_path / f"w0.{ext}", tmp_path / f"w2.{ext}"
        res = run("encode", CLIP, "-o", zero, "--workers", 0, *common)
        assert res.returncode == 0, res.stderr
        res = run("encode", CLIP, "-o", two, "--workers", 2, "--timeline", tmp_path / "t.json", *common)
        assert res.returncode == 0, res.stderr
        assert "15 frames, 80x44" in res.stderr and "2 workers" in res.stderr
        if ext == "ivf":
            assert two.read_bytes() == zero.read_bytes()
        else:  # the WebM muxer writes a random segment UID even for --workers 0: compare packets
            assert webm_packets(two) == webm_packets(zero) and len(webm_packets(two)) == 15
    timeline = json.loads((tmp_path / "t.json").read_text())
    assert timeline["status"] == "succeeded" and set(timeline["tasks"]) - {"assemble-00000", "join"} == {
        "decode-00000", "decode-00001", "chunk-00000", "chunk-00001", "chunk-00002", "chunk-00003",  # y4m: a
        "rebase-00000", "rebase-00001", "stitch"}  # decode task a batch; a rebase task a batch
    assert sorted(os.listdir(tmp_path)) == ["t.json", "w0.ivf", "w0.webm", "w2.ivf", "w2.webm"]


def test_cli_errors(tmp_path):
    out = tmp_path / "o.ivf"
    res = run("encode", CLIP, "-o", out, "--workers", 0, "--spare", 1)
    assert res.returncode == 2 and "--spare needs --workers N" in res.stderr
    res = run("encode", CLIP, "-o", out, "--workers", 2, "--coordinator", "localhost:1", "--certs", tmp_path)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith(f"excamera: error: --certs {tmp_path}: ")  # (test_encode_remote has the rest)
    bad = tmp_path / "bad.y4m"
    bad.write_bytes(CLIP.read_bytes()[:3000])
    res = run("encode", bad, "-o", out, "--workers", 2)
    assert res.returncode == 1 and res.stderr.startswith("excamera: error:") and res.stderr.count("\n") == 1
    res = run("encode", CLIP, "-o", out, "--workers", 2, "--chunk-frames", 16)
    assert res.returncode == 1 and "fewer than one chunk of 16" in res.stderr
    assert list(tmp_path.iterdir()) == [bad]


def _counting_files(frames, chunk_frames: int, directory: Path, counts: list):
    """``frames``, appending to ``counts`` the files in ``directory`` as each chunk's first is read."""
    for i, image in enumerate(frames):
        if i % chunk_frames == 0:
            counts.append(len(list(directory.iterdir())))
        yield image


def test_spooled_input_holds_one_chunk_and_equals_encode_inputs(clip, tmp_path):
    """Past its memory budget (here none), `--workers N` reads the input into chunk files as it
    goes: when the reader asks for a chunk's first picture, every earlier chunk is already on disk
    (so only one chunk of pictures is held); the objects are encode_inputs' bytes, and pairs()
    removes each file once read."""
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=4, batch_chunks=2)   # 15 frames: chunks of 4, 4, 4, 3
    spool = tmp_path / "spool"
    spool.mkdir()
    on_disk_when_asked = []
    spooled = SpooledInput(_counting_files(frames, 4, spool, on_disk_when_asked), rate, settings, str(spool),
                           progress=lambda done: None, memory_budget=0)
    assert on_disk_when_asked == [0, 1, 2, 3]
    assert (spooled.n_frames, spooled.width, spooled.height, spooled.rate) == (15, 80, 44, tuple(rate))
    pairs = spooled.pairs()
    key, data = next(pairs)
    assert len(list(spool.iterdir())) == 3
    assert {key: data, **dict(pairs)} == encode_inputs(frames, rate, settings)
    assert list(spool.iterdir()) == []


def test_spooled_input_keeps_chunks_in_memory_within_its_budget_and_spills_past_it(clip, tmp_path):
    """Within the budget no file is written; the chunk that would pass it sends every chunk held
    to a file, and every later one too. The objects are the same either way."""
    frames, rate = clip
    settings = EncodeSettings(chunk_frames=4, batch_chunks=2)
    expected = encode_inputs(frames, rate, settings)
    sizes = [len(v) for v in expected.values()]
    in_memory = SpooledInput(frames, rate, settings, str(tmp_path))
    assert list(tmp_path.iterdir()) == [] and in_memory.held == sum(sizes)
    assert dict(in_memory.pairs()) == expected

    files_when_asked = []
    spilled = SpooledInput(_counting_files(frames, 4, tmp_path, files_when_asked), rate, settings, str(tmp_path),
                           memory_budget=sizes[0] + sizes[1])
    assert files_when_asked == [0, 0, 0, 3]   # the third chunk passed the budget: all three to files
    assert len(list(tmp_path.iterdir())) == 4 and spilled.held == 0
    assert dict(spilled.pairs()) == expected
    assert list(tmp_path.iterdir()) == []


def test_spooled_input_refuses_a_size_change(clip, tmp_path):
    from codec.image import Image
    frames, rate = clip
    small = Image(frames[0].y[:32, :64].copy(), frames[0].u[:16, :32].copy(), frames[0].v[:16, :32].copy())
    with pytest.raises(ValueError, match="frame 5 is 64x32, the first is 80x44"):
        SpooledInput(frames[:5] + [small], rate, EncodeSettings(chunk_frames=4), str(tmp_path))


def test_stage_progress_counts_chunks_once_per_stage():
    from excamera.commands.progress import StageProgress as _StageProgress
    from protos import jobs_pb2 as jpb

    p = _StageProgress(3, tty=False, batches=2)
    for tid, a, b in [("chunk-00000", "first-pass", "dump-state"), ("chunk-00001", "first-pass", "dump-state"),
                      ("chunk-00000", "first-pass", "dump-state"), ("rebase-00000", "rebase", "done"),
                      ("stitch", "stitch", "done")]:
        p(jpb.JobEvent(kind="transition", task_id=tid, from_state=a, to_state=b))
    p(jpb.JobEvent(kind="attempt", task_id="chunk-00000", detail="attempt 2"))
    # (a rebase task walks a batch: the rebase counts batches)
    assert p.line().startswith("first pass 2/3 | given state 0/3 | rebase 1/2 | stitch 1/1")
    assert p.line().endswith("1 re-issued")


@requires_tool("vpxdec")
def test_workers_output_decodes_in_vpxdec(tmp_path):
    out = tmp_path / "o.ivf"
    res = run("encode", CLIP, "-o", out, "--workers", 2, "--chunk-frames", 5, "--batch-chunks", 2)
    assert res.returncode == 0, res.stderr
    ours = run("decode", out, "--frame-md5").stdout.split()[::2]
    res = subprocess.run(["vpxdec", "--i420", "-o", str(tmp_path / "f-%4.i420"), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    import hashlib
    theirs = [hashlib.md5((tmp_path / f"f-{i:04d}.i420").read_bytes()).hexdigest() for i in range(1, 16)]
    assert ours == theirs and len(ours) == 15


def test_job_shape_and_timeouts():
    """Batches: prev/next only inside a batch; timeouts grow with the frame size and stay within
    the FSM's bounds (a 4K hour-long input still makes a valid job)."""
    settings = EncodeSettings(chunk_frames=6, batch_chunks=4)
    job = encode_job(45, 176, 144, settings)
    chunks = [t for t in job.tasks if t.task_id.startswith("chunk-")]
    assert len(chunks) == 8 and job.result_tasks == ("stitch",)
    assert [t.params["prev"] != "" for t in chunks] == [False, True, True, True, False, True, True, True]
    assert [t.params["next"] != "" for t in chunks] == [True, True, True, False, True, True, True, False]
    # The chunk tasks end after encode-given-state; one rebase task per batch walks its chunks.
    assert [s.name for s in job.fsm("excamera-encode-chunk").states][-1] == "encode-given-state"
    rebases = [t for t in job.tasks if t.task_id.startswith("rebase-")]
    assert [t.after for t in rebases] == [tuple(t.task_id for t in chunks[:4]), tuple(t.task_id for t in chunks[4:])]
    assert [t.params["frames"] for t in rebases] == [24, 21]
    assert rebases[1].params["outs"] == [f"out/chunk-{i:05d}.ivf" for i in range(4, 8)]
    assert job.tasks[-1].after == tuple(t.task_id for t in rebases) and job.tasks[-1].params["frames"] == 45
    small = job.fsm("excamera-encode-chunk")
    big = encode_job(30 * 3600, 3840, 2160, settings)
    large = big.fsm("excamera-encode-chunk")
    assert 60 <= small.state("encode-given-state").timeout_s < large.state("encode-given-state").timeout_s < 3600
    assert large.state("receive-state").timeout_s >= 4 * large.state("encode-given-state").timeout_s
    walk = big.fsm("excamera-encode-rebase").state("rebase").timeout_s
    assert 4 * large.state("encode-given-state").timeout_s < walk <= 24 * 3600
    assert big.fsm("excamera-encode-stitch").state("stitch").timeout_s == 24 * 3600


def test_default_workers_are_the_cpus_through_the_runtime(tmp_path):
    """Without --workers, excamera encode uses one worker process per CPU (the embedded runtime:
    a timeline is written, with that many workers), and the same bytes as --workers 0."""
    common = ["--chunk-frames", 5, "--batch-chunks", 2, "--cq-level", 28, "--first-pass", "native"]
    zero, default = tmp_path / "w0.ivf", tmp_path / "default.ivf"
    assert run("encode", CLIP, "-o", zero, "--workers", 0, *common).returncode == 0
    res = run("encode", CLIP, "-o", default, "--timeline", tmp_path / "t.json", *common)
    assert res.returncode == 0, res.stderr
    assert default.read_bytes() == zero.read_bytes()
    workers = json.loads((tmp_path / "t.json").read_text())["workers"]
    assert len(workers) == min(os.cpu_count(), 4)   # no more workers than its 4 tasks (3 chunks, stitch) need


def test_the_coordinators_process_does_not_load_the_codec():
    """`excamera encode --workers N` runs the codec in its workers only: what its own process
    imports to read the input and run the job leaves numba unloaded (importing it and the codec
    cost about 0.4 s before the job could start)."""
    code = ("import sys\n"
            "import coordinator.api, coordinator.excamera_job, media.excamera_encode, excamera.commands.encode, media.video\n"
            "from media.excamera_encode import EncodeSettings, chunk_ranges\n"
            "coordinator.excamera_job.encode_job(20, 64, 48, EncodeSettings())\n"
            "print(sorted(m for m in sys.modules if m == 'numba' or m.startswith(('codec.decoder', 'codec.state'))))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
