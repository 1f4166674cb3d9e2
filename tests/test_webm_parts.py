"""``excamera encode -o s3://BUCKET/KEY.webm`` (and ``.mkv``) joined without a funnel
(``media.matroska``, ``worker.assemble_ops``, ``worker.audio_ops``; docs/design/data-path.md): the
stitch lays a Matroska file out from the chunks' links and the audio index alone, assemble tasks
build its pieces into S3's multipart upload. Checked on moto's S3 server on loopback: the pictures
are the .ivf output's, the sound is Opus (AAC copied in .mkv) and in sync, ``--workers 0`` and
``--workers 2`` give the same bytes, as one part or several, with Duration and Cues for a
browser; a job that fails leaves nothing at the key; piece sizes are what the writer writes; a bad
layout fails its task in one line."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import shutil
import subprocess
import sys
import pytest

from common import CLIPS_DIR, ROOT, VP8_DIR
from sound_clips import events, flash_click_clip

av = pytest.importorskip("av")

#: Sound further than this from its pictures is out of sync (tests/test_audio.py's bound).
SYNC_S = 0.040
EVENTS = (5, 20, 33)
ARGS = ["--chunk-frames", "8", "--batch-chunks", "2", "--cq-level", "30", "--first-pass", "native"]
_BUCKETS = itertools.count()


def excamera(*args, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "excamera", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line(p, text: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith("excamera: error: ") and text in lines[0], p.stderr


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """H.264 + AAC, 96x64 at 25 frames a second, 40 frames: a flash and a click at frames 5, 20, 33."""
    path = tmp_path_factory.mktemp("clips") / "flash.mp4"
    flash_click_clip(path, events=EVENTS, frames=40)
    return path


@pytest.fixture(scope="module")
def encoded(s3_server, clip, tmp_path_factory):
    """The clip encoded once each way to one bucket: .ivf, .webm and .mkv with two workers, .webm
    in this process; the objects' bytes by name, downloaded to files too."""
    from common import subprocess_env as base_env

    env = base_env()
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    env.update(s3_server.env)
    bucket = s3_server.bucket("webm-parts")
    where = tmp_path_factory.mktemp("out")
    got = {}
    for name, workers in (("x.ivf", 2), ("x.webm", 2), ("here.webm", 0), ("x.mkv", 2)):
        r = excamera("encode", clip, "-o", f"s3://{bucket}/v/{name}", "--workers", workers, *ARGS, env=env)
        assert r.returncode == 0, r.stderr
        assert "40 frames, 96x64" in r.stderr, r.stderr
        assert ("holds no sound" in r.stderr) == name.endswith(".ivf") and r.stderr.count("warning") <= 1
        data = s3_server.client().get_object(Bucket=bucket, Key=f"v/{name}")["Body"].read()
        (where / name).write_bytes(data)
        got[name] = where / name
    assert s3_server.keys(bucket) == [f"v/{n}" for n in sorted(got)]     # nothing else left
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    return got


def pictures(path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [f.to_ndarray().tobytes() for f in c.decode(c.streams.video[0])]


def test_webm_shows_the_ivf_pictures_with_opus_in_sync(encoded):
    webm, ivf = encoded["x.webm"], encoded["x.ivf"]
    assert webm.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"
    reference = pictures(ivf)
    assert len(reference) == 40 and pictures(webm) == reference
    with av.open(str(webm)) as c:
        assert c.format.name.startswith("matroska") and c.streams.audio[0].codec_context.name == "opus"
    if shutil.which("ffmpeg"):
        def md5s(path):
            out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v", "-f",
                                  "framemd5", "-"], capture_output=True, text=True, check=True, timeout=120).stdout
            return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]
        assert md5s(webm) == md5s(ivf) and len(md5s(ivf)) == 40
    if shutil.which("ffprobe"):
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
                              str(webm)], capture_output=True, text=True, check=True, timeout=60).stdout.split()
        assert out == ["vp8", "opus"]
    flashes, clicks = events(webm)
    assert len(flashes) == 3 and len(clicks) == 3, (flashes, clicks)
    assert [round(f * 25) for f in flashes] == list(EVENTS)
    worst = max(abs(c - f) for f, c in zip(flashes, clicks))
    print(f"s3 webm: worst sync offset {worst * 1000:.2f} ms")
    assert worst < SYNC_S


def test_mkv_copies_the_aac(encoded, clip):
    mkv = encoded["x.mkv"]
    assert pictures(mkv) == pictures(encoded["x.ivf"])
    with av.open(str(mkv)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        copied = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    with av.open(str(clip)) as c:
        source = [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]
    # The input's packets as they are (from the first one the video's span holds: not AAC's priming).
    assert len(copied) >= 70 and any(source[k:k + len(copied)] == copied for k in range(3))
    flashes, clicks = events(mkv)
    assert max(abs(c - f) for f, c in zip(flashes, clicks)) < SYNC_S


def test_workers_0_and_2_give_the_same_bytes(encoded):
    assert encoded["here.webm"].read_bytes() == encoded["x.webm"].read_bytes()


def _elements(data: bytes, start: int, end: int):
    """(id, where it starts, payload start, payload end) of the EBML elements in ``data[start:end]``
    (RFC 8794 section 4: an ID and a size, each a variable-length integer)."""
    def vint(at, keep_marker):
        width = 9 - data[at].bit_length()
        value = int.from_bytes(data[at:at + width], "big")
        return (value if keep_marker else value & ((1 << (7 * width)) - 1)), at + width
    at = start
    while at < end:
        begin = at
        eid, at = vint(at, True)
        size, at = vint(at, False)
        yield eid, begin, at, at + size
        at += size


def _fields(data: bytes, parent) -> dict:
    return {e: data[x:y] for e, _, x, y in _elements(data, parent[2], parent[3])}


def test_duration_cues_and_seek_head_for_a_browser(encoded):
    import struct

    from media import matroska as mk

    data = encoded["x.webm"].read_bytes()
    ebml, segment = list(_elements(data, 0, len(data)))
    assert ebml[0] == mk.EBML and segment[0] == mk.SEGMENT and segment[3] == len(data)   # a known size
    assert _fields(data, ebml)[mk.DOC_TYPE] == b"webm"
    s0 = segment[2]                                   # positions count from the Segment's payload
    children = list(_elements(data, s0, segment[3]))
    top = [c[0] for c in children]
    assert top[:3] == [mk.SEEK_HEAD, mk.INFO, mk.TRACKS] and top[-1] == mk.CUES
    clusters = [c for c in children if c[0] == mk.CLUSTER]
    assert len(clusters) == 5                         # one per chunk of 8 frames
    info = _fields(data, children[1])
    assert abs(struct.unpack(">d", info[mk.DURATION])[0] - 1600.0) < 1e-6   # 40 frames at 25 a second, in ms
    assert int.from_bytes(info[mk.TIMESTAMP_SCALE], "big") == 1_000_000
    # The SeekHead points at Info, Tracks and Cues where they are.
    seeks = {}
    for seek in _elements(data, children[0][2], children[0][3]):
        f = _fields(data, seek)
        seeks[int.from_bytes(f[mk.SEEK_ID], "big")] = int.from_bytes(f[mk.SEEK_POSITION], "big")
    assert seeks == {c[0]: c[1] - s0 for c in children if c[0] in (mk.INFO, mk.TRACKS, mk.CUES)}
    # A cue per cluster that opens with a key frame (batches of 2 chunks: clusters 0, 2, 4).
    cues = []
    for point in _elements(data, children[-1][2], children[-1][3]):
        f = {c[0]: c for c in _elements(data, point[2], point[3])}
        pos = _fields(data, f[mk.CUE_TRACK_POSITIONS])
        cues.append((int.from_bytes(data[f[mk.CUE_TIME][2]:f[mk.CUE_TIME][3]], "big"),
                     int.from_bytes(pos[mk.CUE_CLUSTER_POSITION], "big")))
    assert cues == [(0, clusters[0][1] - s0), (640, clusters[2][1] - s0), (1280, clusters[4][1] - s0)]
    with av.open(str(encoded["x.webm"])) as c:       # a player seeks by them
        c.seek(1300, stream=c.streams.video[0])
        first = next(c.decode(c.streams.video[0]))
        assert abs(float(first.pts * first.time_base) - 1.28) < 1e-6


def test_several_parts_are_the_same_bytes(s3_server, monkeypatch, clip, encoded, tmp_path):
    """The part minimum lowered (moto's server runs in this process): several parts, each
    assembled by a worker, joined to the bytes of the one-part CLI run."""
    import moto.s3.models

    from coordinator.api import RunConfig, run_job
    from coordinator.excamera_job import JoinPlan, SourceInput, encode_job
    from media.excamera_encode import EncodeSettings
    from storage.s3 import MultipartOutput

    part_min = 1000
    monkeypatch.setattr(moto.s3.models, "S3_UPLOAD_PART_MIN_SIZE", part_min)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    bucket = s3_server.bucket(f"webm-parts-{next(_BUCKETS)}")
    settings = EncodeSettings(8, 2, 30, "native", 1)
    source = SourceInput(str(clip), settings, reach_local=True)
    url = f"s3://{bucket}/parts.webm"
    upload = MultipartOutput(url)
    upload.start()
    job = encode_job(source.n_frames, source.width, source.height, settings, source=source.plan,
                     join=JoinPlan(url, upload.upload_id, part_min), rate=source.rate)
    assert [t.task_id for t in job.tasks].count("audio") == 1
    audio = next(t for t in job.tasks if t.task_id == "audio")
    assert audio.after == () and "audio" in next(t for t in job.tasks if t.task_id == "stitch").after
    run_job(job, RunConfig(workers=2, storage=str(tmp_path / "st"), timeout_s=240), inputs=source.pairs(),
            ops_modules=("worker.codec_ops",))
    got = s3_server.client().get_object(Bucket=bucket, Key="parts.webm")
    assert got["Body"].read() == encoded["x.webm"].read_bytes()
    assert int(got["ETag"].strip('"').rpartition("-")[2]) >= 3      # a multipart ETag ends in -PARTS
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_no_audio_is_video_only(s3_server, s3_child_env, clip):
    bucket = s3_server.bucket(f"webm-parts-{next(_BUCKETS)}")
    for workers in (2, 0):
        r = excamera("encode", clip, "-o", f"s3://{bucket}/n{workers}.webm", "--workers", workers, "--no-audio",
                     *ARGS, env=s3_child_env)
        assert r.returncode == 0, r.stderr
    data = [s3_server.client().get_object(Bucket=bucket, Key=f"n{w}.webm")["Body"].read() for w in (2, 0)]
    assert data[0] == data[1]
    with av.open(io.BytesIO(data[0])) as c:
        assert [s.type for s in c.streams] == ["video"]
        assert sum(1 for f in c.decode(video=0)) == 40
    # An input with no sound at all: the audio task says so, and the file is video only.
    silent = CLIPS_DIR / "RTn23_80x44p15_15f.y4m"
    r = excamera("encode", silent, "-o", f"s3://{bucket}/silent.mkv", "--workers", 2, *ARGS, env=s3_child_env)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    data = s3_server.client().get_object(Bucket=bucket, Key="silent.mkv")["Body"].read()
    with av.open(io.BytesIO(data)) as c:
        assert c.format.name.startswith("matroska") and [s.type for s in c.streams] == ["video"]
        assert sum(1 for f in c.decode(video=0)) == 15


def test_a_failing_job_leaves_nothing_at_the_key(s3_server, s3_child_env, tmp_path):
    """Chunks of 15 frames at one picture every 3 s last 45 s: more than a Matroska cluster holds
    (its blocks' times are int16 milliseconds). The stitch refuses in one line, the upload is
    aborted; in this process too."""
    slow = tmp_path / "slow.y4m"
    data = (CLIPS_DIR / "RTn23_80x44p15_15f.y4m").read_bytes()
    header, _, rest = data.partition(b"\n")
    slow.write_bytes(header.replace(b"F15:1", b"F1:3") + b"\n" + rest)
    assert b"F1:3" in slow.read_bytes()[:60]
    bucket = s3_server.bucket(f"webm-parts-{next(_BUCKETS)}")
    for workers in (2, 0):
        p = excamera("encode", slow, "-o", f"s3://{bucket}/slow.webm", "--workers", workers, "--chunk-frames", 15,
                     "--first-pass", "native", env=s3_child_env, timeout=240)
        one_line(p, "a Matroska cluster holds 32767 ms")
    assert s3_server.keys(bucket) == []
    assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- the writer and the layout, without S3 ---------------------------------------------------------

def test_piece_sizes_are_the_sizes_written():
    import random

    from media import matroska as mk

    rng = random.Random(7)
    for _ in range(50):
        frames = [bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 126, 127, 128, 16383, 16384))))
                  for _ in range(rng.randrange(1, 6))]
        sound = [bytes(rng.randrange(1, 400)) for _ in range(rng.randrange(0, 8))]
        t0 = rng.randrange(0, 10**9)
        blocks = mk.interleave([(mk.VIDEO_TRACK, t0 + 40 * i, i == 0, f) for i, f in enumerate(frames)],
                               [(mk.AUDIO_TRACK, t0 + 20 * i, True, s) for i, s in enumerate(sound)])
        written = mk.cluster(t0, blocks)
        assert len(written) == mk.cluster_size(sum(map(len, frames)), len(frames), [len(s) for s in sound])
        assert [b[1] for b in blocks] == sorted(b[1] for b in blocks)
    audio = mk.AudioParams("A_OPUS", b"OpusHead" + bytes(11), 48000.0, 2, 6_500_000, 80_000_000)
    sizes = {len(mk.head("webm", 640, 360, 40_000_000, d, audio, clusters, cues)[0])
             for d in (0.0, 1600.0) for clusters in (0, 5, 1 << 40) for cues in (0, 77)}
    assert len(sizes) == 1                       # fixed widths: the head's size is known before the rest
    for n in (1, 2, 30):
        assert len(mk.cues([(i * 1000, i << 33) for i in range(n)])) == mk.cues_size(n)
    with pytest.raises(mk.ClusterError, match="32767 ms"):
        mk.cluster(0, [(mk.VIDEO_TRACK, 40_000, True, b"x")])


def _vp8_frames():
    from codec.ivf import read_ivf

    with open(VP8_DIR / "vp80-00-comprehensive-001.ivf", "rb") as f:
        header, records = read_ivf(f)
    return [r.data for r in records], header.width, header.height


def test_layout_built_here_decodes_to_the_ivf_pictures(tmp_path):
    """``matroska_here`` (``--workers 0``'s path) over a conformance vector: the file PyAV reads
    shows the vector's pictures, and parts of any minimum join to the same bytes."""
    from worker.assemble_ops import matroska_here

    frames, w, h = _vp8_frames()
    one, sizes = matroska_here("webm", frames, w, h, (30, 1), 6, None, 1 << 30)
    assert len(one) == 1 and sizes == [len(one[0])]
    many, sizes = matroska_here("webm", frames, w, h, (30, 1), 6, None, 2000)
    assert len(many) >= 3 and b"".join(many) == one[0] and sizes == list(map(len, many))
    (tmp_path / "v.webm").write_bytes(one[0])
    assert pictures(tmp_path / "v.webm") == pictures(VP8_DIR / "vp80-00-comprehensive-001.ivf")


def test_a_bad_layout_fails_the_task_in_one_line(clip, tmp_path):
    from codec.chunks import frame_tag
    from storage import LocalStorage
    from worker.assemble_ops import MATROSKA, _audio_index, matroska_layout, op_assemble
    from worker.audio_ops import extract, index_doc, pack
    from worker.codec_ops import ivf_bytes
    from worker.ops import OpContext, OperationError

    frames, w, h = _vp8_frames()
    store = LocalStorage(tmp_path / "st")
    keys, counts = [], []
    for i in range(0, len(frames), 6):
        data = ivf_bytes(frames[i:i + 6], w, h, (30, 1))
        keys.append(f"out/c{i:03d}.ivf")
        store.put(keys[-1], data)
        counts.append((hashlib.sha256(data).hexdigest(), len(data), len(frames[i:i + 6]),
                       sum(frame_tag(d).show_frame for d in frames[i:i + 6]), frame_tag(frames[i]).key_frame))
    params, packets = extract(str(clip), "webm", 29, (30, 1))      # the real Opus track, cut to 967 ms
    assert 40 <= len(packets) <= 52
    objects = [[f"a/{n}", hashlib.sha256(d).hexdigest(), len(d), first]
               for n, (first, d) in enumerate(pack(packets))]
    for (key, *_), (_, d) in zip(objects, pack(packets)):
        store.put(key, d)
    raw = json.dumps(index_doc(params, packets, objects)).encode()
    store.put("a/index.json", raw)
    good = matroska_layout("webm", keys, counts, w, h, (30, 1), 1500, _audio_index(raw, "a/index.json"))
    assert "webm" in MATROSKA and len(good["groups"]) >= 2

    def assemble(doc) -> None:
        data = json.dumps(doc).encode()
        ref = store.put("out/layout.json", data)
        for g in range(len(doc["groups"])):
            op_assemble(OpContext("j", f"a{g}", 1, store), layout="out/layout.json", index=g, of=len(doc["groups"]),
                        parts="p/{:05d}", verified=[f"out/layout.json {ref.sha256} {ref.size}"])

    assemble(good)
    joined = b"".join(store.get(f"p/{g:05d}") for g in range(len(good["groups"])))
    (tmp_path / "a.webm").write_bytes(joined)
    assert len(pictures(tmp_path / "a.webm")) == 29
    with av.open(str(tmp_path / "a.webm")) as c:
        assert [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size] == [d for _, _, d in packets]

    def broken(change):
        doc = json.loads(json.dumps(good))
        change(doc)
        return doc

    cases = [lambda d: d["sizes"].__setitem__(0, d["sizes"][0] + 1),
             lambda d: d["pieces"].__setitem__(2, 5),
             lambda d: d["groups"].__setitem__(0, [0, 99]),
             lambda d: d["chunks"][1].__setitem__(4, 7),                 # frames
             lambda d: d["chunks"][1].__setitem__(5, True),              # opens with a key frame: it does not
             lambda d: d["chunks"][0].__setitem__(1, "0" * 64),          # another chunk's digest
             lambda d: d["chunks"][2].__setitem__(8, 10**6),             # audio packets past the index
             lambda d: d.__setitem__("audio", ["a/index.json", "0" * 64, 5]),
             lambda d: d["chunks"][0].pop(),
             lambda d: d.__setitem__("head", "zz")]
    rng = __import__("random").Random(3)
    for _ in range(10):                                                  # and some random damage
        k, i = rng.randrange(len(good["chunks"])), rng.randrange(9)
        cases.append(lambda d, k=k, i=i: d["chunks"][k].__setitem__(i, [None]))
    for change in cases:
        with pytest.raises(OperationError) as e:
            assemble(broken(change))
        assert "\n" not in str(e.value) and str(e.value), str(e.value)


def test_the_audio_task_reads_a_job_object_and_says_when_there_is_no_sound(clip, tmp_path):
    """``audio-track`` over an input uploaded into the job's storage (``job:``: remote and Lambda
    workers) writes the packets ``extract`` finds; over an input with no sound, an index saying so."""
    from storage import LocalStorage
    from worker.audio_ops import extract, op_audio_track
    from worker.ops import OpContext, OperationError

    store = LocalStorage(tmp_path / "st")
    store.put("source/input.mp4", clip.read_bytes())
    out = op_audio_track(OpContext("j", "audio", 1, store), source="job:source/input.mp4", target="webm",
                         frames=40, rate_num=25, rate_den=1, packets="audio/{:05d}.bin", index="audio/index.json")
    index = json.loads(store.get("audio/index.json"))
    params, packets = extract(str(clip), "webm", 40, (25, 1))
    assert out["packets"] == len(packets) == len(index["packets"]) and index["codec_id"] == "A_OPUS"
    assert index["packets"] == [[t, d, len(b)] for t, d, b in packets]
    assert store.get("audio/00000.bin") == b"".join(b for _, _, b in packets)
    assert bytes.fromhex(index["private"])[:8] == b"OpusHead" and index["delay_ns"] == 6_500_000
    # Cut to the video: nothing after 1.6 s (the clip's sound lasts as long; at 20 frames, 0.8 s).
    assert packets[-1][0] - 7 < 1600 and extract(str(clip), "webm", 20, (25, 1))[1][-1][0] - 7 < 800
    op_audio_track(OpContext("j", "audio", 1, store), source=str(CLIPS_DIR / "RTn23_80x44p15_15f.y4m"),
                   target="webm", frames=15, rate_num=15, rate_den=1, packets="q/{:05d}.bin", index="q/index.json")
    assert json.loads(store.get("q/index.json"))["none"] is True
    with pytest.raises(OperationError, match="not webm or matroska"):
        op_audio_track(OpContext("j", "audio", 1, store), source=str(clip), target="mp4", frames=15,
                       rate_num=15, rate_den=1, packets="q/{:05d}.bin", index="q/index.json")


def test_a_sound_nothing_decodes_is_one_warning_with_workers(s3_server, s3_child_env, clip, tmp_path):
    """The audio task finds the sound undecodable: the video is written, and the client says so
    in one warning line (read from the audio task's index), as ``--workers 0`` does."""

    made = tmp_path / "made.webm"
    r = excamera("encode", clip, "-o", made, "--workers", 0, *ARGS, env=s3_child_env)
    assert r.returncode == 0, r.stderr
    data = made.read_bytes()
    assert data.count(b"A_OPUS") == 1
    bogus = tmp_path / "bogus.webm"
    bogus.write_bytes(data.replace(b"A_OPUS", b"A_QXYZ"))   # a Matroska codec ID nothing knows
    bucket = s3_server.bucket(f"webm-parts-{next(_BUCKETS)}")
    for workers in (2, 0):
        r = excamera("encode", bogus, "-o", f"s3://{bucket}/b{workers}.webm", "--workers", workers, *ARGS,
                     env=s3_child_env)
        assert r.returncode == 0, r.stderr
        warnings = [line for line in r.stderr.splitlines() if "warning" in line]
        assert len(warnings) == 1 and "cannot decode" in warnings[0], r.stderr
        got = s3_server.client().get_object(Bucket=bucket, Key=f"b{workers}.webm")["Body"].read()
        with av.open(io.BytesIO(got)) as c:
            assert [s.type for s in c.streams] == ["video"]
