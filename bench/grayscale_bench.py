"""The grayscale pipeline against ffmpeg, side by side in one run (issue 11's benchmark), and the
schedulers' figures (issue 12).

Input: the bundled 720p bigbuckbunny clip (30 frames) looped by ffmpeg's stream copy to >= 600
frames. Then, each timed as a whole process (wall time):

* ``excamera pipeline run pipelines/grayscale.json --workers W`` (decode, grayscale, encode with
  libvpx at cq-level 20 through PyAV, joined into one WebM);
* ``ffmpeg -threads W -i IN -vf hue=s=0 -c:v libvpx -crf 20 -b:v 4294959k -deadline good -cpu-used 1``
  (the same libvpx settings; the unlimited ``-b:v`` lets ``-crf`` act as VP8's constant quality),
  then at lower crf while its SSIM is below ours and still rising.

Both outputs are scored with SSIM against ffmpeg's own raw grayscale pictures, and their sizes
reported. ``--schedulers`` also runs the pipeline under fifo, priority and streaming (deadline
``--deadline``) and reports the time to the first output piece, the streaming misses, and the
workers' busy and held seconds (from the timeline: held = joined to stopped, as a fleet is billed)
against priority, then what streaming would hold against priority on fleets of 2 to 16 workers
with a core each (``scheduler_projection``: this run's task times replayed through the same
schedulers). ``--steal`` also runs it with decode and grayscale as work-stealing pairs
(``pipeline.steal``) and checks the output is the same bytes.

    python bench/grayscale_bench.py [--workers 2] [--frames 600] [--schedulers] [--deadline 20] [--steal]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from media.firstpass import TARGET_KBPS

CLIP = os.path.join(ROOT, "tests", "data", "clips", "compressed", "bigbuckbunny_1280x720_30f.mp4")


def sh(cmd: list[str], **kw) -> float:
    """Run ``cmd``; its wall time in seconds (it must succeed)."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode:
        sys.exit(f"bench: {' '.join(cmd[:4])}... failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def looped(work: str, frames: int) -> str:
    loops = -(-frames // 30)
    out = os.path.join(work, f"bbb_{loops * 30}f.mp4")
    sh(["ffmpeg", "-nostdin", "-v", "error", "-stream_loop", str(loops - 1), "-i", CLIP, "-c", "copy", out])
    return out


def ssim_against(raw_yuv: str, video: str, width: int, height: int) -> float:
    import numpy as np

    from codec.image import Image
    from codec.ssim import mean_ssim
    from media.video import open_video

    frame = width * height * 3 // 2

    def reference():
        with open(raw_yuv, "rb") as f:
            while data := f.read(frame):
                a = np.frombuffer(data, np.uint8)
                cw, ch = width // 2, height // 2
                yield Image(a[:width * height].reshape(height, width),
                            a[width * height:width * height + cw * ch].reshape(ch, cw),
                            a[width * height + cw * ch:].reshape(ch, cw))

    with open_video(video) as v:
        return mean_ssim(reference(), iter(v)).all


def busy_seconds(timeline: dict) -> float:
    """Seconds the workers spent in tasks (their state histories)."""
    total = 0.0
    for w in timeline.get("workers", []):
        hist = w["history"]
        for (t, label), nxt in zip(hist, hist[1:] + [[timeline["duration"], "end"]]):
            if ":" in label:
                total += nxt[0] - t
    return total


def held_seconds(timeline: dict) -> float:
    """Seconds the workers were held: each from joining the job to being stopped (or the end),
    what a fleet of cloud workers is billed for."""
    total = 0.0
    for w in timeline.get("workers", []):
        hist = w["history"]
        end = next((t for t, label in hist if label in ("stopping", "gone")), timeline["duration"])
        total += end - hist[0][0]
    return total


def schedulers(src: str, work: str, workers: int, deadline: float, video_s: float) -> None:
    from coordinator.config import RunConfig
    from pipeline.run import run_pipeline
    from scheduler_projection import project, print_rows, first_join

    rows, timelines = {}, {}
    for name in ("fifo", "priority", "streaming"):
        sched = {"name": "streaming", "deadline": deadline} if name == "streaming" else name
        tl = os.path.join(work, f"{name}.json")
        t0 = time.perf_counter()
        summary = run_pipeline(os.path.join(ROOT, "pipelines", "grayscale.json"), {"input_0": src},
                               {"output_0": os.path.join(work, f"{name}.webm")},
                               RunConfig(workers=workers, timeline=tl), scheduler=sched)
        wall = time.perf_counter() - t0
        with open(tl) as f:
            timeline = json.load(f)
        rows[name] = (wall, summary["schedule"], busy_seconds(timeline), held_seconds(timeline))
        timelines[name] = timeline
    print(f"\nschedulers, {workers} workers (first output = the first encoded piece reaching the sink):")
    for name, (wall, sched, busy, held) in rows.items():
        extra = ""
        if name == "streaming":
            extra = (f", deadline {deadline:g} s: {len(sched['misses'])} of {sched['outputs']} pieces late; "
                     f"worker-seconds held {held / rows['priority'][3]:.2f}x priority's (target <= 0.7x)")
        print(f"  {name:9} wall {wall:6.1f} s, first output at {sched.get('first_output_s', float('nan')):6.2f} s, "
              f"busy {busy:6.1f} worker-s, held {held:6.1f} worker-s{extra}")
    print(f"  time to the first output, priority / fifo: "
          f"{rows['priority'][1]['first_output_s'] / rows['fifo'][1]['first_output_s']:.2f}x")
    # Here every worker of a CPU-bound pipeline is busy under priority: what streaming saves, the
    # workers a larger fleet holds idle, is projected from this run's task times.
    launch_s = first_join(timelines["priority"])
    projected = project(timelines["priority"], os.path.join(ROOT, "pipelines", "grayscale.json"), deadline,
                        [2, 4, 8, 16], video_s, launch_s)
    print_rows(projected, deadline, launch_s)
    return rows, projected


def steal(src: str, work: str, plain: str, t_plain: float, workers: int) -> None:
    """The same pipeline with ``"steal": true`` on decode and grayscale: its cost undisturbed,
    and the same bytes."""
    with open(os.path.join(ROOT, "pipelines", "grayscale.json")) as f:
        doc = json.load(f)
    for node in doc["nodes"]:
        if node["stage"] in ("decode", "grayscale"):
            node["steal"] = True
    spec, out = os.path.join(work, "steal.json"), os.path.join(work, "steal.webm")
    with open(spec, "w") as f:
        json.dump(doc, f)
    t = sh([sys.executable, "-m", "excamera", "pipeline", "run", spec, "-i", f"input_0={src}", "-o",
            f"output_0={out}", "--workers", str(workers)], cwd=ROOT)
    with open(plain, "rb") as a, open(out, "rb") as b:
        same = a.read() == b.read()
    print(f"  {'with work-stealing pairs':28} {t:7.2f} s  ({t / t_plain:.2f}x the plain run; "
          f"{'the same bytes' if same else 'DIFFERENT BYTES'})")
    if not same:
        sys.exit("bench: work stealing changed the output")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--schedulers", action="store_true")
    ap.add_argument("--deadline", type=float, default=20.0)
    ap.add_argument("--steal", action="store_true",
                    help="also run the pipeline with decode and grayscale as work-stealing pairs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="excamera-graybench-") as work:
        src = looped(work, args.frames)
        raw = os.path.join(work, "raw.yuv")
        # -fps_mode passthrough: one picture per decoded frame (else ffmpeg may drop or repeat some
        # on a stream-copied loop's timestamps, and the pictures would not line up).
        sh(["ffmpeg", "-nostdin", "-v", "error", "-i", src, "-vf", "hue=s=0", "-fps_mode", "passthrough",
            "-pix_fmt", "yuv420p", "-f", "rawvideo", raw])
        ours, theirs = os.path.join(work, "ours.webm"), os.path.join(work, "ffmpeg.webm")
        t_ours = sh([sys.executable, "-m", "excamera", "pipeline", "run", os.path.join(ROOT, "pipelines", "grayscale.json"),
                     "-i", f"input_0={src}", "-o", f"output_0={ours}", "--workers", str(args.workers)], cwd=ROOT)
        ssim_ours = ssim_against(raw, ours, 1280, 720)
        n = os.path.getsize(raw) // (1280 * 720 * 3 // 2)
        print(f"grayscale pipeline, {n} frames of 1280x720, {args.workers} workers / threads, whole-process wall time:")
        print(f"  {'excamera pipeline run':28} {t_ours:7.2f} s  {os.path.getsize(ours):>11,} bytes  SSIM {ssim_ours:.4f}")
        # ffmpeg at our encoder's settings (crf 20, an unlimited bit rate: with ffmpeg's usual
        # "-b:v 1G" libvpx's rate control starves every frame after the first few seconds to 4 KB),
        # then at lower crf until its SSIM reaches ours or stops rising.
        rows = []
        for crf in (20, 14, 10, 6, 4):
            t_ff = sh(["ffmpeg", "-nostdin", "-y", "-v", "error", "-threads", str(args.workers), "-i", src,
                       "-vf", "hue=s=0", "-fps_mode", "passthrough", "-c:v", "libvpx", "-crf", str(crf),
                       "-b:v", f"{TARGET_KBPS}k", "-qmin", "0", "-qmax", "31", "-deadline", "good",
                       "-cpu-used", "1", "-threads", str(args.workers), theirs])
            ssim_ff = ssim_against(raw, theirs, 1280, 720)
            print(f"  {'ffmpeg hue=s=0 libvpx crf ' + str(crf):28} {t_ff:7.2f} s  {os.path.getsize(theirs):>11,} bytes  "
                  f"SSIM {ssim_ff:.4f}")
            rows.append((crf, t_ff, ssim_ff))
            if ssim_ff >= ssim_ours or (len(rows) > 1 and ssim_ff - rows[-2][2] < 0.0005):
                break
        print(f"  excamera / ffmpeg at the same settings (crf 20): {t_ours / rows[0][1]:.2f}x wall (target <= 1.5x)")
        crf, t_ff, ssim_ff = rows[-1]
        reached = "reaching ours" if ssim_ff >= ssim_ours else "its plateau, short of ours"
        print(f"  excamera / ffmpeg at the nearest quality (crf {crf}, SSIM {ssim_ff:.4f}, {reached}): "
              f"{t_ours / t_ff:.2f}x wall")
        t_steal = steal(src, work, ours, t_ours, args.workers) if args.steal else None
        sched = (schedulers(src, work, args.workers, args.deadline, -(-args.frames // 30) * 30 / 25.0)
                 if args.schedulers else None)
        record_figures(args, n, (t_ours, os.path.getsize(ours), ssim_ours), rows, t_steal, sched)


def record_figures(args, n: int, ours: tuple, ffmpeg_rows: list, t_steal: float | None, sched) -> None:
    """What was printed, as data (bench/results.json; bench/render.py makes the tables)."""
    from bench.results import record

    t_ours, size, ssim = ours
    rows = [[f"excamera pipeline run pipelines/grayscale.json --workers {args.workers}", round(t_ours, 2),
             size, round(ssim, 4), None]]
    rows += [[f"ffmpeg -threads {args.workers} -vf hue=s=0 libvpx crf {crf}", round(t, 2), None, round(q, 4),
              round(t_ours / t, 2)] for crf, t, q in ffmpeg_rows]
    if t_steal is not None:
        rows.append(["excamera, work-stealing pairs on decode and grayscale (same bytes)", round(t_steal, 2),
                     size, round(ssim, 4), None])
    tables = [{"title": f"{n} frames of 1280x720, {args.workers} workers / threads, whole-process wall time",
               "columns": ["command", "wall (s)", "bytes", "SSIM", "excamera / this"], "rows": rows}]
    if sched is not None:
        srows, projected = sched
        first = {k: v[1].get("first_output_s") for k, v in srows.items()}
        _, sch, _, held = srows["streaming"]
        tables.append({"title": f"Schedulers, {args.workers} workers",
                       "columns": ["scheduler", "wall (s)", "first output (s)", "busy (worker-s)", "held (worker-s)"],
                       "rows": [[k, round(v[0], 1), None if first[k] is None else round(first[k], 2), round(v[2], 1),
                                 round(v[3], 1)] for k, v in srows.items()],
                       "note": f"streaming at a {args.deadline:g} s deadline: {len(sch['misses'])} of "
                               f"{sch['outputs']} pieces late, {held / srows['priority'][3]:.2f}x priority's "
                               f"worker-seconds held."})
        tables.append({"title": "Streaming against priority, projected on fleets with a core per worker "
                                "(measured task times replayed through the real schedulers)",
                       "columns": ["fleet", "priority held (worker-s)", "streaming held (worker-s)",
                                   "at most at once", "late", "streaming / priority"],
                       "rows": [[r["fleet"], round(r["priority"]["held"], 1), round(r["streaming"]["held"], 1),
                                 r["streaming"]["peak"], f"{r['streaming']['late']} of {r['streaming']['pieces']}",
                                 round(r["ratio"], 2)] for r in projected],
                       "note": "Target: streaming <= 0.7x priority's worker-seconds."})
    record("grayscale", {
        "command": "python bench/grayscale_bench.py " + " ".join(sys.argv[1:]),
        "headline": [{"figure": f"Grayscale pipeline, {n} frames of 720p, {args.workers} workers",
                      "value": f"{t_ours / ffmpeg_rows[0][1]:.2f}x",
                      "against": f"ffmpeg -threads {args.workers} -vf hue=s=0 -c:v libvpx", "target": "<= 1.5x"}],
        "tables": tables}, title="Grayscale pipeline against ffmpeg")


if __name__ == "__main__":
    main()
