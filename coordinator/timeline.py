"""Draw a job's timeline (the JSON that ``--timeline`` writes) as a per-worker Gantt chart, in SVG
or PNG.

One row per worker connection; each bar is one state of one task (colored by state, so the
phases of an ExCamera-shaped job line up across workers; a pipeline's, whose tasks have the one
state "run", by node, named on the bar where it fits), idle time is left blank, and the time
axis is in seconds from the job's start. ``layout`` places the chart once as rectangles, lines and
texts; the SVG is written by hand from them, the PNG drawn with Pillow. Either is written under a
temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from html import escape

from foundation.errors import ExcameraError

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295")
ROW, BAR, LEFT, TOP, WIDTH = 18, 14, 150, 40, 900


class TimelineError(ExcameraError):
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


def outcomes(timeline: dict) -> dict[tuple[str, str], str]:
    """(worker id, task) -> how that worker's attempt at the task ended (``succeeded``,
    ``superseded`` when a duplicate won or the job ended, ``lost``, ...)."""
    return {key: str(a.get("status", "")) for key, a in _attempts(timeline)}


def steals(timeline: dict) -> dict[tuple[str, str], str]:
    """(worker id, task) -> what the winning attempt of a work-stealing pair did (``pipeline.steal``)."""
    return {key: str(a["steal"]) for key, a in _attempts(timeline) if a.get("steal")}


def _attempts(timeline: dict):
    """((worker id, task), attempt record) for every well-formed attempt in the timeline."""
    for task, attempts in (timeline.get("tasks") or {}).items():
        for a in attempts if isinstance(attempts, list) else ():
            if isinstance(a, dict) and "worker" in a:
                yield (str(a["worker"]), str(task)), a


def layout(timeline: dict) -> tuple[int, int, list[tuple]]:
    """(width, height, items) of the chart. Items, in drawing order: ("line", x1, y1, x2, y2,
    color), ("rect", x, y, w, h, color, tooltip or None), ("text", x, y, text, anchor, size), with
    y of a text its baseline and anchor "start", "middle" or "end"."""
    rows = segments(timeline)
    duration = max([float(timeline.get("duration", 0))] + [s[1] for _, segs in rows for s in segs] + [1e-9])
    key, color, keys = _coloring(rows)
    height = TOP + ROW * len(rows) + 72 + 16 * ((len(keys) + 3) // 4)
    items: list[tuple] = [("text", LEFT, 16, f'{timeline.get("name", "")} {timeline.get("job", "")}: '
                           f'{timeline.get("status", "")}, {duration:.2f} s, {len(rows)} workers', "start", 13)]
    _axis(items, duration, len(rows))
    struck, ticked = _bars(items, timeline, rows, WIDTH / duration, key, color)
    _legend(items, TOP + ROW * len(rows) + 24, keys, color, struck, ticked)
    return LEFT + WIDTH + 20, height, items


def _coloring(rows):
    """(key(task, state), color(key), the keys in legend order): what a bar is colored by, its
    state, or for a pipeline, whose tasks all have the one state "run", its node (the task id's
    first part), so the stages can be told apart."""
    states = sorted({s[3] for _, segs in rows for s in segs})
    by_node = len(states) == 1 and all("." in s[2] for _, segs in rows for s in segs)
    key = (lambda task, state: task.split(".", 1)[0]) if by_node else (lambda task, state: state)
    keys = sorted({key(s[2], s[3]) for _, segs in rows for s in segs})
    # States keep one color in every chart (hashed); nodes take distinct colors in order.
    colors = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(keys)} if by_node else {}

    def color(k: str) -> str:
        return colors.get(k) or _color(k)

    return key, color, keys


def _axis(items: list, duration: float, n_rows: int) -> None:
    """The time axis: about ten ticks, each a grid line down the chart and its seconds."""
    scale = WIDTH / duration
    step = _tick(duration)
    t = 0.0
    while t <= duration + 1e-9:
        x = LEFT + t * scale
        items.append(("line", x, TOP - 6, x, TOP + ROW * n_rows, "#dddddd"))
        items.append(("text", x, TOP - 8, f"{t:g}", "middle", 11))
        t += step


def _bars(items: list, timeline: dict, rows, scale: float, key, color) -> tuple[bool, bool]:
    """Each worker's label and bars; (whether any bar is struck through, whether any has a
    work-stealing tick), for the legend."""
    ended = outcomes(timeline)
    stole = steals(timeline)
    workers = [str(w.get("worker", "")) for w in timeline["workers"]]
    struck = ticked = False
    for i, (label, segs) in enumerate(rows):
        y = TOP + i * ROW
        items.append(("text", LEFT - 6, y + BAR - 3, label[:24], "end", 11))
        for start, end, task, state in segs:
            how = ended.get((workers[i], task), "")
            note = {"superseded": " (superseded: another attempt won)", "lost": " (lost)"}.get(how, "")
            x, w = LEFT + start * scale, max((end - start) * scale, 0.5)
            won = f" (won; {stole[(workers[i], task)]})" if (workers[i], task) in stole else ""
            items.append(("rect", x, y + 1, w, BAR, color(key(task, state)),
                          f"{task} {state}: {start:.3f}-{end:.3f} s{note}{won}"))
            label = key(task, state)
            if w > 7 * len(label) + 6:   # room for the node's or state's name on the bar
                items.append(("text", x + 3, y + BAR - 2, label, "start", 10))
            if won and ", 0 of them" not in won:   # it stole: a white tick at its end
                items.append(("line", x + w - 1, y + 1, x + w - 1, y + 1 + BAR, "#ffffff"))
                ticked = True
            if note:  # an attempt that did not win: struck through
                items.append(("line", x, y + 1 + BAR / 2, x + w, y + 1 + BAR / 2, "#000000"))
                struck = True
    return struck, ticked


def _legend(items: list, y: float, keys: list[str], color, struck: bool, ticked: bool) -> None:
    """A swatch per state (or node), four to a line, then the struck-through and tick marks where used."""
    for j, k in enumerate(keys):
        x, yy = LEFT + (j % 4) * 200, y + (j // 4) * 16
        items.append(("rect", x, yy - 10, 12, 12, color(k), None))
        items.append(("text", x + 16, yy, k, "start", 11))
    if struck:
        yy = y + ((len(keys) + 3) // 4) * 16
        items.append(("line", LEFT, yy - 4, LEFT + 12, yy - 4, "#000000"))
        items.append(("text", LEFT + 16, yy, "struck through: an attempt that lost to a duplicate, or was lost",
                      "start", 11))
    if ticked:
        yy = y + ((len(keys) + 3) // 4) * 16 + (16 if struck else 0)
        items.append(("rect", LEFT, yy - 10, 12, 12, "#888888", None))
        items.append(("line", LEFT + 11, yy - 10, LEFT + 11, yy + 2, "#ffffff"))
        items.append(("text", LEFT + 16, yy, "white tick at the end: a work-stealing pair's winner "
                      "that also did units of its peer's half", "start", 11))


def render(timeline: dict) -> str:
    """The chart as SVG text."""
    width, height, items = layout(timeline)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">']
    for item in items:
        kind = item[0]
        if kind == "line":
            _, x1, y1, x2, y2, color = item
            out.append(f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{y2}" stroke="{color}"/>')
        elif kind == "rect":
            _, x, y, w, h, color, tip = item
            title = f"<title>{escape(tip)}</title>" if tip else ""
            out.append(f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{h}" fill="{color}">{title}</rect>')
        else:
            _, x, y, text, anchor, size = item
            attrs = (f' text-anchor="{anchor}"' if anchor != "start" else "") + (f' font-size="{size}"' if size != 11
                                                                                  else "")
            out.append(f'<text x="{x:.1f}" y="{y}"{attrs}>{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(timeline: dict) -> bytes:
    """The chart as PNG bytes (drawn with Pillow, at the SVG's size)."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise TimelineError("drawing a PNG needs Pillow (pip install pillow); or write .svg") from None
    width, height, items = layout(timeline)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    fonts: dict[int, object] = {}
    for item in items:
        kind = item[0]
        if kind == "line":
            _, x1, y1, x2, y2, color = item
            draw.line([(x1, y1), (x2, y2)], fill=color)
        elif kind == "rect":
            _, x, y, w, h, color, _ = item
            draw.rectangle([x, y, x + max(w, 1) - 1, y + h - 1], fill=color)
        else:
            png_text(draw, fonts, item)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def png_text(draw, fonts: dict, item: tuple) -> None:
    """Draw a ``("text", x, y, text, anchor, size)`` item with Pillow where SVG would put it
    (``fonts`` caches Pillow's default font per size)."""
    from PIL import ImageFont

    _, x, y, text, anchor, size = item
    if size not in fonts:
        fonts[size] = ImageFont.load_default(size)
    # Pillow's anchors: l/m/r horizontally, "s" on the baseline, as SVG places text.
    draw.text((x, y), text, fill="black", font=fonts[size], anchor={"start": "ls", "middle": "ms", "end": "rs"}[anchor])


FORMATS = (".svg", ".png")


def render_file(src: str, dst: str) -> None:
    """Read timeline JSON ``src``, write the chart to ``dst`` (SVG or PNG by its extension;
    temporary name, then rename)."""
    from codec.ivf import AtomicFile

    if not dst.lower().endswith(FORMATS):
        raise TimelineError(f"{dst}: the chart must be .svg or .png")
    try:
        with open(src) as f:
            timeline = json.load(f)
    except json.JSONDecodeError as e:
        raise TimelineError(f"not JSON: {e}") from None
    if not isinstance(timeline, dict):
        raise TimelineError("not a timeline (from --timeline): the top level is not an object")
    data = render_png(timeline) if dst.lower().endswith(".png") else render(timeline).encode()
    with AtomicFile(dst) as out:
        out.write(data)
