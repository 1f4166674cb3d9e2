"""run_pipeline and ``excamera pipeline`` end to end: --workers 0, 1, 2 write the same bytes, so
does a run whose workers are killed with SIGKILL; bad input is one line, exit 1, no output."""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import pipeline_test_stages  # noqa: F401 - registers the t_* stages
from codec.y4m import read_y4m
from coordinator.config import ConfigError, RemoteCoordinator, RunConfig
from pipeline.run import PipelineError, run_pipeline

HERE = RunConfig(workers=0)

TESTS = Path(__file__).resolve().parent
CLIP = TESTS / "data" / "clips" / "RTn23_80x44p15_15f.y4m"     # 15 frames at 15 fps, bundled
STAGES = ("pipeline_test_stages",)


def spec(sleep_s=0.0, fail_at=None):
    nodes = [{"name": "unpack", "stage": "t_unpack"},
             {"name": "inv", "stage": "t_invert", "config": {"sleep_s": sleep_s}},
             {"name": "grp", "stage": "t_regroup", "config": {"frames_per_chunk": "{fps}/3"}},
             {"name": "ovl", "stage": "t_overlay"}]
    streams = [{"src": "input_0:chunks", "dst": "unpack:chunks"},
               {"src": "unpack:frames", "dst": "inv:frames"},
               {"src": "inv:frames", "dst": "grp:frames"},
               {"src": "grp:frames", "dst": "ovl:frames"},
               {"src": "input_1:frame", "dst": "ovl:image", "durable": True},
               {"src": "ovl:frames", "dst": "output_0:frames"},
               {"src": "grp:groups", "dst": "output_1:records"}]
    if fail_at is not None:
        nodes.append({"name": "boom", "stage": "t_fail", "config": {"at": fail_at}})
        streams[1] = {"src": "unpack:frames", "dst": "boom:frames"}
        streams.append({"src": "boom:frames", "dst": "inv:frames"})
    return {"nodes": nodes, "streams": streams}


def run(tmp_path, name, workers, *, doc=None, **kw):
    out = {"output_0": str(tmp_path / f"{name}.y4m"), "output_1": str(tmp_path / f"{name}.json")}
    summary = run_pipeline(doc or spec(), {"input_0": str(CLIP), "input_1": str(CLIP)}, out,
                           RunConfig(workers=workers, **kw), stage_modules=STAGES, frames_per_chunk=2)
    return summary, Path(out["output_0"]).read_bytes(), Path(out["output_1"]).read_bytes()


def expected_pictures():
    """What the pipeline computes, the obvious way."""
    _, images = read_y4m(str(CLIP))
    side = images[0].y // 4
    out = []
    for im in images:
        y = np.minimum((255 - im.y).astype(np.uint16) + side, 255).astype(np.uint8)
        out.append((y, 255 - im.u, 255 - im.v))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref"), "ref", 0)


def test_workers_0_computes_the_pipeline(reference):
    summary, y4m, records = reference
    _, images = read_y4m(__import__("io").BytesIO(y4m))
    want = expected_pictures()
    assert len(images) == 15
    for im, (y, u, v) in zip(images, want):
        assert np.array_equal(im.y, y) and np.array_equal(im.u, u) and np.array_equal(im.v, v)
    groups = json.loads(records)
    # 15 fps / 3 = 5 frames per group, across the 2-frame input chunks, in order.
    assert [(g["frame"], g["count"], g["parts"]) for g in groups] == [
        (0, 5, [[0, 2], [2, 2], [4, 1]]), (5, 5, [[5, 1], [6, 2], [8, 2]]), (10, 5, [[10, 2], [12, 2], [14, 1]])]
    assert summary["nodes"] == {"unpack": (8, 8, True), "inv": (8, 8, True), "grp": (3, 3, True),
                                "ovl": (3, 3, True)}
    assert summary["outputs"] == {"output_0": 15, "output_1": 15}


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_n_write_the_same_bytes(tmp_path, reference, workers):
    summary, y4m, records = run(tmp_path, "w", workers)
    assert (y4m, records) == reference[1:]
    assert summary["tasks"] == 22


def _busy_worker_pids(c, node: str) -> list[int]:
    """Pids of the coordinator's workers now running a task of ``node`` (read from another
    thread: a changing dict is simply retried next time)."""
    try:
        workers = list(c.engine.workers.values())
    except RuntimeError:
        return []
    out = []
    for w in workers:
        a = w.attempt
        m = re.search(r"pid (\d+)", w.name)
        if w.status == "busy" and a is not None and a.task.spec.task_id.startswith(node + ".") and m:
            out.append(int(m.group(1)))
    return out


def test_kill_9_workers_mid_run_same_bytes(tmp_path, reference, monkeypatch):
    """Workers busy with a task are killed with SIGKILL; the job re-issues their work, same bytes."""
    from coordinator.server import Coordinator

    result, kills, seen = {}, [], {}
    submit = Coordinator.submit

    async def watched_submit(self, *a, **kw):
        seen["c"] = self
        return await submit(self, *a, **kw)

    monkeypatch.setattr(Coordinator, "submit", watched_submit)

    def go():
        try:
            result["r"] = run(tmp_path, "k", 2, doc=spec(sleep_s=0.5), spare=1,
                              timeline=str(tmp_path / "t.json"))
        except BaseException as e:  # noqa: BLE001 - reported below
            result["e"] = e

    t = threading.Thread(target=go)
    t.start()
    deadline = time.monotonic() + 120
    while t.is_alive() and len(kills) < 2 and time.monotonic() < deadline:
        pids = _busy_worker_pids(seen["c"], "inv") if "c" in seen else []
        if pids:
            time.sleep(0.1)    # mid-task
            os.kill(pids[0], signal.SIGKILL)
            kills.append(pids[0])
            time.sleep(0.3)
        time.sleep(0.02)
    t.join(180)
    assert "e" not in result, result.get("e")
    assert len(kills) == 2, kills
    assert result["r"][1:] == reference[1:]
    timeline = json.loads((tmp_path / "t.json").read_text())
    statuses = [a["status"] for attempts in timeline["tasks"].values() for a in attempts]
    assert statuses.count("lost") >= 2, statuses      # the kills really interrupted tasks
    # The timeline also holds the tasks the DAG became; drawn, the re-issued ones are orange.
    phys = timeline["pipeline"]
    assert len(phys["tasks"]) == 22 and phys["sinks"]["output_1"] == sorted(
        t for t in phys["tasks"] if t.startswith("grp."))
    assert all(src.startswith("inv.") for t, v in phys["tasks"].items() if t.startswith("grp.") for src in v["from"])
    from pipeline.draw import draw_file
    from pipeline.spec import validate
    draw_file(validate(spec()), str(tmp_path / "tasks.svg"), str(tmp_path / "t.json"))
    svg = (tmp_path / "tasks.svg").read_text()
    assert "22 tasks in 8 columns" in svg and svg.count('fill="#f6b26b"') >= 1


# -- errors: one line, nothing written ----------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 1])
def test_a_failing_task_names_node_and_lineage(tmp_path, workers):
    with pytest.raises(PipelineError) as e:
        run(tmp_path, "f", workers, doc=spec(fail_at=4), max_attempts=2)
    msg = str(e.value)
    assert "\n" not in msg and "node boom lineage 2: stage t_fail: refusing frame 4" in msg
    assert not list(tmp_path.iterdir())


def test_inputs_and_outputs_are_checked_before_running(tmp_path):
    out = {"output_0": str(tmp_path / "o.y4m"), "output_1": str(tmp_path / "o.json")}
    good_in = {"input_0": str(CLIP), "input_1": str(CLIP)}
    cases = [
        ({"input_0": str(tmp_path / "nope.y4m"), "input_1": str(CLIP)}, out,
         f"input_0: {tmp_path / 'nope.y4m'}: No such file or directory"),
        ({"input_0": str(CLIP)}, out, "input_1: no file given (-i input_1=FILE)"),
        (dict(good_in, input_7=str(CLIP)), out, "input_7: the pipespec has no input input_7"),
        (good_in, {"output_0": out["output_0"]}, "output_1: no file given (-o output_1=FILE)"),
        (good_in, dict(out, output_0=str(tmp_path / "missing" / "o.y4m")), "output_0: "),
        (good_in, dict(out, output_0=str(tmp_path / "o.webp")), "output_0: "),
    ]
    for inputs, outputs, message in cases:
        with pytest.raises(PipelineError) as e:
            run_pipeline(spec(), inputs, outputs, HERE, stage_modules=STAGES)
        assert message in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_an_input_of_the_wrong_kind(tmp_path):
    junk = tmp_path / "junk.y4m"
    junk.write_bytes(b"not a video at all\n")
    out = {"output_0": str(tmp_path / "o.y4m"), "output_1": str(tmp_path / "o.json")}
    with pytest.raises(PipelineError, match=r"^input_0: .*junk.y4m: [^\n]+$"):
        run_pipeline(spec(), {"input_0": str(junk), "input_1": str(CLIP)}, out, HERE, stage_modules=STAGES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.y4m"]


def test_a_remote_coordinator_needs_workers_and_certs(tmp_path):
    with pytest.raises(ConfigError, match="a remote coordinator needs a certificate directory"):
        RunConfig(RemoteCoordinator("localhost:1", ""))
    with pytest.raises(ConfigError, match="with no workers the job runs in this process"):
        RunConfig(RemoteCoordinator("localhost:1", "certs"), workers=0)


def test_progress_reports_every_node_finished(tmp_path):
    seen = {}
    out = {"output_0": str(tmp_path / "o.y4m"), "output_1": str(tmp_path / "o.json")}
    run_pipeline(spec(), {"input_0": str(CLIP), "input_1": str(CLIP)}, out, HERE, stage_modules=STAGES,
                 on_progress=lambda n, done, planned, fin: seen.__setitem__(n, (done, planned, fin)))
    # One-second input chunks (15 frames): one unpack and inv task; grp regroups into 5-frame tasks.
    assert seen == {"unpack": (1, 1, True), "inv": (1, 1, True), "grp": (3, 3, True), "ovl": (3, 3, True)}


# -- the command line ---------------------------------------------------------------------------------

def cli(*argv):
    from excamera.cli import main
    return main(list(argv))


def test_cli_run_check_draw(tmp_path, capsys, reference):
    sp = tmp_path / "s.json"
    sp.write_text(json.dumps(spec()))
    o0, o1 = tmp_path / "o.y4m", tmp_path / "o.json"
    assert cli("pipeline", "run", str(sp), "-i", f"input_0={CLIP}", "-i", f"input_1={CLIP}", "-o", f"output_0={o0}",
               "-o", f"output_1={o1}", "--workers", "0", "--stages", STAGES[0], "--frames-per-chunk", "2") == 0
    assert (o0.read_bytes(), o1.read_bytes()) == reference[1:]
    assert cli("pipeline", "check", str(sp), "--stages", STAGES[0]) == 0
    text = capsys.readouterr().out
    assert "ovl: stage t_overlay, delivery default; frames <- grp:frames; image <- input_1:frame (durable)" in text
    assert cli("pipeline", "draw", str(sp), "-o", str(tmp_path / "d.svg"), "--stages", STAGES[0]) == 0
    svg = (tmp_path / "d.svg").read_text()
    assert svg.startswith("<svg") and ">ovl</text>" in svg and "stroke-dasharray" in svg   # durable: dashed
    assert cli("pipeline", "draw", str(sp), "-o", str(tmp_path / "d.png"), "--stages", STAGES[0]) == 0
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # --workers 0 with --timeline: the tasks the DAG became, drawn.
    t = tmp_path / "t.json"
    assert cli("pipeline", "run", str(sp), "-i", f"input_0={CLIP}", "-i", f"input_1={CLIP}", "-o", f"output_0={o0}",
               "-o", f"output_1={o1}", "--workers", "0", "--stages", STAGES[0], "--frames-per-chunk", "2",
               "--timeline", str(t)) == 0
    assert set(json.loads(t.read_text())["pipeline"]["nodes"]) == {"input_0", "input_1", "unpack", "inv", "grp", "ovl",
                                                                   "output_0", "output_1"}
    assert cli("pipeline", "draw", str(sp), "--timeline", str(t), "-o", str(tmp_path / "p.png"),
               "--stages", STAGES[0]) == 0
    assert cli("pipeline", "draw", str(sp), "--timeline", str(sp), "-o", str(tmp_path / "q.png"),
               "--stages", STAGES[0]) == 1
    assert "has no pipeline tasks" in capsys.readouterr().err


def test_cli_errors_are_one_line_exit_1(tmp_path, capsys):
    sp = tmp_path / "s.json"
    sp.write_text('{"nodes": [], "streams": [\n  {"src": 1,}]}')
    assert cli("pipeline", "check", str(sp)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"excamera: error: {sp}: not JSON: line 2 column")
    doc = spec()
    doc["nodes"][1]["stage"] = "nope"
    sp.write_text(json.dumps(doc))
    assert cli("pipeline", "run", str(sp), "-i", f"input_0={CLIP}", "-o", f"output_0={tmp_path / 'o.y4m'}",
               "--stages", STAGES[0]) == 1
    err = capsys.readouterr().err
    assert err.startswith("excamera: error: node inv: unknown stage 'nope'") and err.count("\n") == 1
    sp.write_text(json.dumps(spec()))
    assert cli("pipeline", "run", str(sp), "-i", f"input_0={CLIP}", "-i", f"input_1={CLIP}",
               "-o", f"output_0={tmp_path / 'o.y4m'}", "-o", f"output_1={tmp_path / 'o.json'}",
               "--stages", STAGES[0], "--workers", "0", "--coordinator", "h:1") == 1
    assert "--coordinator needs --workers N (N > 0) and --certs DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli("pipeline", "run", str(sp), "-i", "input_0")
    assert e.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_dispatch_bench_smoke(monkeypatch, capsys, tmp_path):
    """The dispatch benchmark runs (tiny sizes; its figures are not asserted)."""
    import sys
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))   # it adds bench/ for its workers
    monkeypatch.setenv("EXCAMERA_BENCH_RESULTS", str(tmp_path / "results.json"))  # not the committed figures
    monkeypatch.syspath_prepend(str(TESTS.parent / "bench"))
    import pipeline_bench
    assert pipeline_bench.main(["--dispatch", "--tasks", "20", "--workers", "2", "--chain", "3"]) == 0
    out = capsys.readouterr().out
    assert "dispatch: 20 tasks of no-op stages on 2 local workers" in out and "node b: median" in out
    assert "latency: one item through 3 chained no-op nodes" in out
    assert "pipeline_bench" in sys.modules
    assert "pipeline-dispatch" in (tmp_path / "results.json").read_text()   # its figures, recorded


def test_progress_bars_on_a_terminal_only(capsys):
    from excamera.commands.pipeline import NodeProgress
    p = NodeProgress(["decode", "gray"], tty=True)
    p("decode", 1, 3, False)
    p("decode", 3, 3, True)
    p("gray", 0, 2, False)
    p.close()
    err = capsys.readouterr().err
    assert "decode" in err and "3/3" in err and "finished" in err and "0/2" in err
    quiet = NodeProgress(["decode"], tty=False)
    quiet("decode", 1, 1, True)
    quiet.close()
    assert capsys.readouterr().err == ""
