"""Draw a job's timeline (the JSON that ``--timeline`` writes) as a per-worker Gantt chart in SVG.

One row per worker connection; each bar is one state of one task (colored by state, so the
phases of an ExCamera-shaped job line up across workers), idle time is left blank, and the time
axis is in seconds from the job's start. The SVG is written by hand (no plotting library) under
a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295")
ROW, BAR, LEFT, TOP, WIDTH = 18, 14, 150, 40, 900


class TimelineError(ValueError):
    """A timeline file that is not what ``--timeline`` writes."""


def _color(state: str) -> str:
    return PALETTE[int(hashlib.sha256(state.encode()).hexdigest(), 16) % len(PALETTE)]


def _tick(duration: float) -> float:
    """A round tick interval (1, 2 or 5 times a power of ten) giving at most ten ticks."""
    raw = max(duration / 10, 1e-6)
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def segments(timeline: dict) -> list[tuple[str, list[tuple[float, float, str, str]]]]:
    """(worker label, [(start, end, task, state), ...]) per worker; idle/stopping/gone omitted."""
    try:
        end = float(timeline["duration"])
        rows = []
        for w in timeline["workers"]:
            hist = [(float(t), str(label)) for t, label in w["history"]]
            segs = []
            for i, (t, label) in enumerate(hist):
                t_end = hist[i + 1][0] if i + 1 < len(hist) else end
                if ":" in label:
                    task, state = label.split(":", 1)
                    segs.append((t, max(t, t_end), task, state))
            rows.append((f"{w['worker']} {w.get('name', '')}".strip(), segs))
        return rows
    except (KeyError, TypeError, ValueError) as e:
        raise TimelineError(f"not a timeline (from --timeline): {type(e).__name__}: {e}") from None


def render(timeline: dict) -> str:
    """The SVG text of the chart."""
    rows = segments(timeline)
    duration = max([float(timeline.get("duration", 0))] + [s[1] for _, segs in rows for s in segs] + [1e-9])
    scale = WIDTH / duration
    states = sorted({s[3] for _, segs in rows for s in segs})
    height = TOP + ROW * len(rows) + 40 + 16 * ((len(states) + 3) // 4)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 20}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="{LEFT}" y="16" font-size="13">{escape(str(timeline.get("name", "")))} '
           f'{escape(str(timeline.get("job", "")))}: {escape(str(timeline.get("status", "")))}, '
           f'{duration:.2f} s, {len(rows)} workers</text>']
    # time axis: about ten ticks
    step = _tick(duration)
    t = 0.0
    while t <= duration + 1e-9:
        x = LEFT + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{TOP + ROW * len(rows)}" '
                   f'stroke="#ddd"/><text x="{x:.1f}" y="{TOP - 8}" text-anchor="middle">{t:g}</text>')
        t += step
    for i, (label, segs) in enumerate(rows):
        y = TOP + i * ROW
        out.append(f'<text x="{LEFT - 6}" y="{y + BAR - 3}" text-anchor="end">{escape(label[:24])}</text>')
        for start, end, task, state in segs:
            out.append(f'<rect x="{LEFT + start * scale:.2f}" y="{y + 1}" '
                       f'width="{max((end - start) * scale, 0.5):.2f}" height="{BAR}" '
                       f'fill="{_color(state)}"><title>{escape(task)} {escape(state)}: '
                       f'{start:.3f}-{end:.3f} s</title></rect>')
    y = TOP + ROW * len(rows) + 24
    for j, state in enumerate(states):
        x, yy = LEFT + (j % 4) * 200, y + (j // 4) * 16
        out.append(f'<rect x="{x}" y="{yy - 10}" width="12" height="12" fill="{_color(state)}"/>'
                   f'<text x="{x + 16}" y="{yy}">{escape(state)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_file(src: str, dst: str) -> None:
    """Read timeline JSON ``src``, write the SVG to ``dst`` (temporary name, then rename)."""
    try:
        with open(src) as f:
            timeline = json.load(f)
    except json.JSONDecodeError as e:
        raise TimelineError(f"not JSON: {e}") from None
    if not isinstance(timeline, dict):
        raise TimelineError("not a timeline (from --timeline): the top level is not an object")
    svg = render(timeline)
    d = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".timeline.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(svg)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
