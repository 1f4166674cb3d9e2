"""Draw a pipespec's logical DAG as SVG (written by hand) or PNG (drawn with Pillow).

Columns by depth (sources left, sinks right), one box per node with its stage and delivery
function, an arrow per stream labelled with its ports (dashed when durable). With a run's
timeline (``--timeline``, to which ``run_pipeline`` adds the tasks the DAG became), the physical
DAG instead: a column per node, a box per task (its lineage; orange when it took more than one
attempt), an edge from each task to the tasks that took its items. ``layout`` and
``layout_tasks`` place everything once as shapes; both renderers draw the same shapes, as
``coordinator.timeline`` does.
"""

from __future__ import annotations

import io
import math
from html import escape

from pipeline.spec import Spec

BOX_W, BOX_H, COL, ROW, MARGIN = 170, 54, 250, 90, 30
FILL = {"source": "#d9ead3", "sink": "#fce5cd", "stage": "#dae8fc"}


def _depths(spec: Spec) -> dict[str, int]:
    depth = {name: 0 for name in spec.inputs}
    for name in spec.nodes:   # topological order
        depth[name] = 1 + max((depth[u] for u in spec.upstream[name]), default=0)
    last = max(depth.values(), default=0) + 1
    for name in spec.outputs:
        depth[name] = last
    return depth


def layout(spec: Spec) -> tuple[int, int, list[tuple]]:
    """(width, height, shapes): ("rect", x, y, w, h, fill), ("line", x1, y1, x2, y2, dashed),
    ("poly", points, color), ("text", x, y, text, anchor, size)."""
    depth = _depths(spec)
    columns: dict[int, list[str]] = {}
    for name, d in depth.items():
        columns.setdefault(d, []).append(name)
    pos = {}
    for d, names in columns.items():
        for i, name in enumerate(names):
            pos[name] = (MARGIN + d * COL, MARGIN + 24 + i * ROW)
    width = MARGIN * 2 + (max(columns) + 1) * COL - (COL - BOX_W)
    height = MARGIN * 2 + 24 + max(len(v) for v in columns.values()) * ROW
    shapes: list[tuple] = [("text", MARGIN, MARGIN, f"pipeline: {len(spec.nodes)} stage node(s), "
                            f"{len(spec.streams)} stream(s)", "start", 13)]
    between: dict[tuple[str, str], int] = {}
    for s in spec.streams:
        (x1, y1), (x2, y2) = pos[s.src], pos[s.dst]
        # Several streams between the same two nodes: each its own line, a few pixels apart.
        k = between[s.src, s.dst] = between.get((s.src, s.dst), -1) + 1
        off = 12 * k - 6 if sum(1 for t in spec.streams if (t.src, t.dst) == (s.src, s.dst)) > 1 else 0
        ax, ay, bx, by = x1 + BOX_W, y1 + BOX_H / 2 + off, x2, y2 + BOX_H / 2 + off
        shapes.append(("line", ax, ay, bx - 8, by, s.durable))
        angle = math.atan2(by - ay, bx - ax)
        tip = [(bx, by)] + [(bx - 10 * math.cos(angle + k), by - 10 * math.sin(angle + k)) for k in (0.4, -0.4)]
        shapes.append(("poly", tip, "#444444"))
        label = f"{s.src_port} -> {s.dst_port}" + (" (durable)" if s.durable else "")
        shapes.append(("text", (ax + bx) / 2, (ay + by) / 2 + (12 if off > 0 else -4), label, "middle", 10))
    for name, (x, y) in pos.items():
        if name in spec.inputs:
            kind, sub = "source", ", ".join(f"{p}: {t}" for p, t in spec.inputs[name].items())
        elif name in spec.outputs:
            kind, sub = "sink", spec.outputs[name].port_type
        else:
            n = spec.nodes[name]
            kind, sub = "stage", f"{n.stage.name} / {n.delivery.name}"
        shapes.append(("rect", x, y, BOX_W, BOX_H, FILL[kind]))
        shapes.append(("text", x + BOX_W / 2, y + 22, name, "middle", 13))
        shapes.append(("text", x + BOX_W / 2, y + 40, sub[:30], "middle", 10))
    return width, height, shapes


#: At most this many task boxes per column; the rest are counted.
MAX_TASKS_SHOWN = 300
T_W, T_H, T_ROW, T_COL = 120, 18, 24, 190


def layout_tasks(timeline: dict) -> tuple[int, int, list[tuple]]:
    """The physical DAG from a timeline's ``pipeline`` part (``PipelinePlanner.physical``)."""
    phys = timeline.get("pipeline") if isinstance(timeline, dict) else None
    if not isinstance(phys, dict) or not isinstance(phys.get("tasks"), dict):
        raise ValueError("the timeline has no pipeline tasks (write it with excamera pipeline run --timeline)")
    attempts = {tid: len(a) for tid, a in (timeline.get("tasks") or {}).items()}
    columns: dict[str, list[str]] = {n: [] for n in phys.get("nodes", [])}
    for tid, t in sorted(phys["tasks"].items(), key=lambda kv: (kv[1]["lineage"], kv[0])):
        columns.setdefault(t["node"], []).append(tid)
    for name in phys.get("sinks", {}):
        columns[name] = [name]
    for name in list(columns):
        if not columns[name]:
            columns[name] = [name]          # a source: one box
    pos, shapes = {}, []
    tall = 0
    for c, (name, tids) in enumerate(columns.items()):
        x = MARGIN + c * T_COL
        shapes.append(("text", x + T_W / 2, MARGIN + 30, name, "middle", 12))
        shown = tids[:MAX_TASKS_SHOWN]
        for r, tid in enumerate(shown):
            pos[tid] = (x, MARGIN + 44 + r * T_ROW)
        if len(tids) > len(shown):
            shapes.append(("text", x + T_W / 2, MARGIN + 44 + len(shown) * T_ROW + 12,
                           f"... {len(tids) - len(shown)} more", "middle", 10))
        tall = max(tall, len(shown) + 1)
    edges = [(src, tid) for tid, t in phys["tasks"].items() for src in t.get("from", [])]
    edges += [(src, name) for name, srcs in phys.get("sinks", {}).items() for src in srcs]
    for src, dst in edges:
        if src in pos and dst in pos:
            (x1, y1), (x2, y2) = pos[src], pos[dst]
            shapes.append(("line", x1 + T_W, y1 + T_H / 2, x2, y2 + T_H / 2, False))
    n_tasks = len(phys["tasks"])
    retried = sum(1 for t in phys["tasks"] if attempts.get(t, 1) > 1)
    shapes.insert(0, ("text", MARGIN, MARGIN, f"{n_tasks} tasks in {len(columns)} columns; "
                      f"{retried} took more than one attempt (orange)", "start", 13))
    for name, tids in columns.items():
        for tid in tids[:MAX_TASKS_SHOWN]:
            x, y = pos[tid]
            if tid in phys["tasks"]:
                fill = "#f6b26b" if attempts.get(tid, 1) > 1 else FILL["stage"]
                label = f"lineage {phys['tasks'][tid]['lineage']}"
            else:
                fill = FILL["sink"] if name in phys.get("sinks", {}) else FILL["source"]
                label = name
            shapes.append(("rect", x, y, T_W, T_H, fill))
            shapes.append(("text", x + T_W / 2, y + 13, label, "middle", 10))
    width = MARGIN * 2 + len(columns) * T_COL
    height = MARGIN * 2 + 44 + tall * T_ROW
    return width, height, shapes


def render_svg(spec: Spec, timeline: dict | None = None) -> str:
    width, height, shapes = layout(spec) if timeline is None else layout_tasks(timeline)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>']
    for s in shapes:
        if s[0] == "rect":
            _, x, y, w, h, fill = s
            out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" stroke="#333333"/>')
        elif s[0] == "line":
            _, x1, y1, x2, y2, dashed = s
            dash = ' stroke-dasharray="5,4"' if dashed else ""
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#444444"{dash}/>')
        elif s[0] == "poly":
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in s[1])
            out.append(f'<polygon points="{pts}" fill="{s[2]}"/>')
        else:
            _, x, y, text, anchor, size = s
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}">'
                       f'{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(spec: Spec, timeline: dict | None = None) -> bytes:
    from PIL import Image, ImageDraw

    from coordinator.timeline import png_text

    width, height, shapes = layout(spec) if timeline is None else layout_tasks(timeline)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    fonts: dict[int, object] = {}
    for s in shapes:
        if s[0] == "rect":
            _, x, y, w, h, fill = s
            draw.rounded_rectangle([x, y, x + w, y + h], 6, fill=fill, outline="#333333")
        elif s[0] == "line":
            _, x1, y1, x2, y2, dashed = s
            if dashed:
                n = max(1, int(math.hypot(x2 - x1, y2 - y1) // 9))
                for k in range(0, n, 2):
                    a, b = k / n, min(1.0, (k + 1) / n)
                    draw.line([(x1 + (x2 - x1) * a, y1 + (y2 - y1) * a), (x1 + (x2 - x1) * b, y1 + (y2 - y1) * b)],
                              fill="#444444")
            else:
                draw.line([(x1, y1), (x2, y2)], fill="#444444")
        elif s[0] == "poly":
            draw.polygon(s[1], fill=s[2])
        else:
            png_text(draw, fonts, s)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def draw_file(spec: Spec, path: str, timeline: str | None = None) -> None:
    """The DAG (or, with a run's ``timeline`` file, the tasks it became) to ``path`` (.svg or
    .png), under a temporary name then renamed."""
    import json

    from codec.ivf import AtomicFile

    lower = path.lower()
    if not lower.endswith((".svg", ".png")):
        raise ValueError(f"{path}: the picture must end in .svg or .png")
    doc = None
    if timeline is not None:
        try:
            with open(timeline) as f:
                doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{timeline}: not JSON: {e}") from None
    data = render_png(spec, doc) if lower.endswith(".png") else render_svg(spec, doc).encode()
    with AtomicFile(path) as out:
        out.write(data)
