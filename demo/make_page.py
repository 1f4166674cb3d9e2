"""Write out/demo/index.html: every result of `make demo` in a page a browser plays.

    python demo/make_page.py out/demo TITLE=FILE[:sound] ... [--chart PNG] [--stream TITLE=MANIFEST]

Each ``TITLE=FILE`` becomes a ``<video controls>``; ``:sound`` says the file must carry sound,
checked here (the page is not written if it does not: exit 1, one line). Streams (``.mpd`` DASH,
``.m3u8`` HLS) are listed with their segments' count: Safari plays HLS itself, other browsers
need a player script (dash.js, hls.js), so the page links them rather than embedding them.
"""

from __future__ import annotations

import html
import os
import sys


def streams(path: str) -> dict[str, str]:
    import av

    with av.open(path) as c:
        out = {}
        for s in c.streams:
            if s.type in ("video", "audio") and s.type not in out:
                out[s.type] = s.codec_context.name
        out["seconds"] = f"{c.duration / 1e6:.1f}" if c.duration else "?"
        return out


def main(argv: list[str]) -> int:
    directory, items, chart, manifests = argv[0], [], None, []
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "--chart":
            chart = rest.pop(0)
        elif arg == "--stream":
            manifests.append(rest.pop(0).split("=", 1))
        else:
            title, _, spec = arg.partition("=")
            path, _, need = spec.partition(":")
            items.append((title, path, need == "sound"))
    cards = []
    for title, path, need_sound in items:
        info = streams(path)
        if need_sound and "audio" not in info:
            print(f"demo: error: {path} has no sound", file=sys.stderr)
            return 1
        what = f"{info.get('video', '?')} video" + (f", {info['audio']} sound" if "audio" in info else ", no sound")
        rel = os.path.relpath(path, directory)
        cards.append(f"<figure><video controls preload=metadata src=\"{html.escape(rel)}\"></video>"
                     f"<figcaption><b>{html.escape(title)}</b><br>{html.escape(rel)}: {what}, "
                     f"{info['seconds']} s</figcaption></figure>")
    links = []
    for title, path in manifests:
        rel = os.path.relpath(path, directory)
        stem = os.path.splitext(os.path.basename(path))[0]
        kind = ".ts" if path.endswith(".m3u8") else ".webm"      # HLS: MPEG-TS; DASH: WebM
        segments = [f for f in os.listdir(os.path.dirname(path) or ".")
                    if f.startswith(stem + "-") and f.endswith(kind)]
        links.append(f"<li><a href=\"{html.escape(rel)}\">{html.escape(title)}</a>: {html.escape(rel)} "
                     f"and {len(segments)} segments beside it</li>")
    page = ["<!doctype html><meta charset=utf-8><title>excamera demo</title>",
            "<style>body{font:15px sans-serif;margin:2em;max-width:70em}figure{display:inline-block;"
            "margin:0 1.5em 1.5em 0;vertical-align:top}video{max-width:32em;display:block;background:#000}"
            "</style>",
            "<h1>excamera demo results</h1>",
            "<p>Each video plays here as written by <code>make demo</code>; those made from a clip "
            "with a soundtrack carry it, in step with the pictures.</p>", *cards]
    if links:
        page += ["<h2>Streams</h2><p>For a streaming player (Safari plays HLS itself; others need "
                 "dash.js or hls.js, or open them in VLC or ffplay):</p><ul>", *links, "</ul>"]
    if chart:
        rel = os.path.relpath(chart, directory)
        page += ["<h2>Tasks of the mirror pipeline on its workers</h2>",
                 f"<img src=\"{html.escape(rel)}\" style=\"max-width:100%\">"]
    out = os.path.join(directory, "index.html")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(page) + "\n")
    os.replace(out + ".tmp", out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
