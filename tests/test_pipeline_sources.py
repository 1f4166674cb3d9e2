"""``excamera pipeline run`` with sources as references (``pipeline.source_refs``): the client reads
only the input's index and hands out ranges that the decode stage's workers fetch and decode
themselves; the chunks, pictures and output bytes are what the client's own cut gave, for
``--workers 0`` and 2, local files, ``http://`` (a loopback server with byte ranges) and
``s3://`` (moto); bad sources are one line."""

from __future__ import annotations

import itertools

import pytest

from common import ROOT
from coordinator.config import RunConfig
from pipeline import source_refs
from pipeline.media_io import cut_input
from pipeline.run import PipelineError, _read_sources, run_pipeline
from pipeline.spec import load
from pipeline.stages.video import decode_chunk
from range_server import RangeServer, raw_h264

CLIPS = ROOT / "tests" / "data" / "clips"
GOP10 = CLIPS / "compressed" / "carphone_176x144_36f_gop10.mp4"
BIKES = CLIPS / "compressed" / "bikes_640x272_100f.mp4"
FOREMAN = CLIPS / "foreman_qcif_176x144_10f.y4m"
GRAYSCALE = ROOT / "pipelines" / "grayscale.json"
MIRROR = ROOT / "pipelines" / "mirror.json"
ALL_CLIPS = sorted(CLIPS.glob("*.y4m")) + sorted((CLIPS / "compressed").glob("*.mp4"))
_BUCKETS = itertools.count()


@pytest.mark.parametrize("clip", ALL_CLIPS, ids=lambda p: p.name)
def test_the_index_gives_the_client_cut(clip):
    """The cuts planned from the index alone are ``cut_input``'s, for every chunk size (GOPs of
    10 in chunks of 3 are cut 3, 3, 4; a clip with one key frame every 3 frames)."""
    for n in (1, 2, 3, 4, 6, 7, 12, None):
        chunks, _ = source_refs.range_chunks(str(clip), n)
        want = [(c.start, c.count, c.fps) for c in cut_input(str(clip), n)]
        assert [(c.start, c.count, c.fps) for c in chunks] == want, n
        assert {c.container for c in chunks} == {"range"}


@pytest.mark.parametrize("clip", [GOP10, FOREMAN], ids=lambda p: p.name)
def test_a_range_chunk_decodes_to_the_client_chunk_pictures(clip):
    chunks, _ = source_refs.range_chunks(str(clip), 3)
    for ours, theirs in zip(chunks, cut_input(str(clip), 3), strict=True):
        assert decode_chunk(ours).to_bytes() == decode_chunk(theirs).to_bytes(), ours.start


def test_no_picture_passes_through_the_client():
    """The source's objects are references of a few hundred bytes, not pictures."""
    put = {}
    spec = load(str(GRAYSCALE))
    items = _read_sources(spec, {"input_0": str(BIKES)}, 6, lambda k, d: put.__setitem__(k, d))
    assert sum(i.count for i in items["input_0", "chunks"]) == 100
    assert len(put) == len(items["input_0", "chunks"]) > 1
    assert max(map(len, put.values())) < 1000
    assert all(b'"source"' in d for d in put.values())


def _run(spec, src: str, out, workers: int, **kw):
    run_pipeline(str(spec), {"input_0": src}, {"output_0": str(out)}, RunConfig(workers=workers, **kw),
                 frames_per_chunk=3, audio=False)
    return out.read_bytes()


@pytest.fixture
def client_cut(monkeypatch):
    """Runs as before: the client cuts every source itself."""
    def cut(tmp_path, spec, clip, name):
        with monkeypatch.context() as m:
            m.setattr(source_refs, "reads_ranges", lambda *a: False)
            return _run(spec, str(clip), tmp_path / f"{name}.ivf", 0)
    return cut


@pytest.mark.parametrize("spec", [GRAYSCALE, MIRROR], ids=lambda p: p.stem)
def test_same_bytes_as_the_client_cut_for_workers_0_and_2(spec, tmp_path, client_cut):
    for clip in (GOP10, FOREMAN):
        before = client_cut(tmp_path, spec, clip, f"before-{clip.stem}")
        assert len(before) > 1000
        assert _run(spec, str(clip), tmp_path / f"w0-{clip.stem}.ivf", 0) == before, clip.name
    assert _run(spec, str(GOP10), tmp_path / "w2.ivf", 2) == \
        (tmp_path / f"before-{GOP10.stem}.ivf").read_bytes()


def test_http_and_s3_sources_give_the_same_bytes(tmp_path, client_cut, s3env):
    expect = client_cut(tmp_path, GRAYSCALE, GOP10, "local")
    server = RangeServer({"clip.mp4": GOP10.read_bytes()})
    try:
        assert _run(GRAYSCALE, server.url("clip.mp4"), tmp_path / "http.ivf", 2) == expect
        assert server.log and all(rng for _, _, rng in server.log)  # ranged requests only
        # Each decode task fetches its own blocks (of 1 MiB: this whole small file), the client
        # the index's: never more than one file's worth a reader; speculation may run a task
        # twice (a duplicate reads its own blocks), never more.
        tasks = len(source_refs.range_chunks(str(GOP10), 3)[0])
        assert server.sent <= (2 * tasks + 1) * GOP10.stat().st_size
    finally:
        server.stop()
    bucket = s3env.bucket(f"pipesrc-{next(_BUCKETS)}")
    s3env.client().put_object(Bucket=bucket, Key="in/clip.mp4", Body=GOP10.read_bytes())
    assert _run(GRAYSCALE, f"s3://{bucket}/in/clip.mp4", tmp_path / "s3.ivf", 0) == expect


def test_bad_sources_are_one_line(tmp_path):
    server = RangeServer({"clip.mp4": GOP10.read_bytes()})
    try:
        with pytest.raises(PipelineError, match=r"^input_0: .*missing\.mp4: HTTP 404") as e:
            _run(GRAYSCALE, server.url("missing.mp4"), tmp_path / "o.ivf", 0)
        assert "\n" not in str(e.value)
        # Changed once the client has read the index: the decode task's reads are refused.
        server.change_after = len(server.log) + 2
        with pytest.raises(PipelineError, match="changed while the job ran"):
            _run(GRAYSCALE, server.url("clip.mp4"), tmp_path / "o.ivf", 0)
        assert not (tmp_path / "o.ivf").exists()
    finally:
        server.stop()


def test_a_source_with_no_index_is_cut_here_and_said_once(tmp_path, capsys, client_cut):
    raw = raw_h264(str(GOP10), str(tmp_path / "clip.h264"))
    assert source_refs.range_chunks(raw, 3) == (None, "no index")
    expect = client_cut(tmp_path, GRAYSCALE, raw, "before")
    capsys.readouterr()
    assert _run(GRAYSCALE, f"file://{raw}", tmp_path / "o.ivf", 0) == expect
    assert capsys.readouterr().err.count("no index") == 1


def test_the_sound_of_an_s3_source_is_kept(tmp_path, s3env):
    """The outputs carry the sound of a source read by range (the audio packets come through
    ``media.source`` as the pictures do): same codec, about the same length as the pictures."""
    import av

    clip = CLIPS / "compressed" / "bigbuckbunny_320x180_5s_aac.mp4"
    bucket = s3env.bucket(f"pipesrc-{next(_BUCKETS)}")
    s3env.client().put_object(Bucket=bucket, Key="in/bunny.mp4", Body=clip.read_bytes())
    out = tmp_path / "gray.mkv"
    run_pipeline(str(GRAYSCALE), {"input_0": f"s3://{bucket}/in/bunny.mp4"}, {"output_0": str(out)},
                 RunConfig(workers=0))
    with av.open(str(clip)) as c:
        want = c.streams.audio[0].codec_context.name
    with av.open(str(out)) as c:
        (sound,) = c.streams.audio
        assert sound.codec_context.name == want                  # copied into Matroska
        seconds = sum(p.duration or 0 for p in c.demux(sound)) * sound.time_base
    assert 4.5 < float(seconds) < 6.0, seconds
