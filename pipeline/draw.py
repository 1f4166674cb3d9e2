"""Draw a pipespec's logical DAG as SVG (written by hand) or PNG (drawn with Pillow).

Columns by depth (sources left, sinks right), one box per node with its stage and delivery
function, an arrow per stream labelled with its ports (dashed when durable). ``layout`` places
everything once as shapes; both renderers draw the same shapes, as ``excamera.timeline`` does.
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
    for s in spec.streams:
        (x1, y1), (x2, y2) = pos[s.src], pos[s.dst]
        ax, ay, bx, by = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
        shapes.append(("line", ax, ay, bx - 8, by, s.durable))
        angle = math.atan2(by - ay, bx - ax)
        tip = [(bx, by)] + [(bx - 10 * math.cos(angle + k), by - 10 * math.sin(angle + k)) for k in (0.4, -0.4)]
        shapes.append(("poly", tip, "#444444"))
        label = f"{s.src_port} -> {s.dst_port}" + (" (durable)" if s.durable else "")
        shapes.append(("text", (ax + bx) / 2, (ay + by) / 2 - 4, label, "middle", 10))
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


def render_svg(spec: Spec) -> str:
    width, height, shapes = layout(spec)
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


def render_png(spec: Spec) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    width, height, shapes = layout(spec)
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
            _, x, y, text, anchor, size = s
            if size not in fonts:
                fonts[size] = ImageFont.load_default(size)
            draw.text((x, y), text, fill="black", font=fonts[size],
                      anchor={"start": "ls", "middle": "ms", "end": "rs"}[anchor])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def draw_file(spec: Spec, path: str) -> None:
    """The DAG to ``path`` (.svg or .png), under a temporary name then renamed."""
    from codec.ivf import AtomicFile

    lower = path.lower()
    if not lower.endswith((".svg", ".png")):
        raise ValueError(f"{path}: the picture must end in .svg or .png")
    data = render_png(spec) if lower.endswith(".png") else render_svg(spec).encode()
    with AtomicFile(path) as out:
        out.write(data)
