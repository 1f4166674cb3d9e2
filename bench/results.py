"""Benchmark figures as data: every bench script records what it prints in ``bench/results.json``.

``record(section, figures)`` replaces one section of the file (``"decode"``, ``"vp8enc"``,
``"distributed-bigbuckbunny"``, ...) with the figures just measured, stamped with the machine
(platform, CPU model, core count), the date, and the versions that matter (Python, numpy, numba,
PyAV and the FFmpeg it links, and libvpx and ffmpeg where their tools are installed). Sections
another bench wrote are kept. ``bench/render.py`` turns the file into ``docs/benchmarks.md`` and
the README's headline table; ``make bench`` runs it last.

``figures`` is a dict with any of these keys (each optional)::

    {"command": "python bench/decode_bench.py",          # what produced it
     "headline": [{"figure": "...", "value": "2.02x", "against": "vpxdec", "target": "<= 2.5x"}],
     "tables": [{"title": "...", "columns": ["input", "excamera s", "vpxdec s", "ratio"],
                 "rows": [["bikes", 0.67, 0.23, 2.95]], "note": "..."}],
     "notes": ["..."]}

Numbers stay numbers (``render.py`` formats them); ratios are excamera's figure over the
reference tool's, measured side by side in one run, which is what stays comparable across
machines. Standard library only, and nothing here imports the project: a bench can record even
when the codec is what failed to load.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

#: The committed results file. ``$EXCAMERA_BENCH_RESULTS``, read at each call, points a trial run
#: (or a test that runs a bench) elsewhere.
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")


def results_path(path: str | None = None) -> str:
    return path or os.environ.get("EXCAMERA_BENCH_RESULTS") or RESULTS

#: The keys a section's figures may hold; anything else is refused so a typo does not vanish.
FIGURE_KEYS = ("command", "headline", "tables", "notes")
HEADLINE_KEYS = ("figure", "value", "against", "target")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else whatever ``platform`` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    return {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count()}


def _tool_version(argv: list[str], pattern: str) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(pattern, proc.stdout + proc.stderr)
    return found.group(1) if found else None


def versions() -> dict:
    """Python, the numeric and video packages, and the reference tools (those found)."""
    out = {"python": platform.python_version()}
    for name in ("numpy", "numba", "av"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    libvpx = _tool_version(["vpxenc", "--help"], r"VP8 Encoder (v[\w.\-]+)")
    if libvpx:
        out["libvpx"] = libvpx
    ffmpeg = _tool_version(["ffmpeg", "-version"], r"ffmpeg version (\S+)")
    if ffmpeg:
        out["ffmpeg"] = ffmpeg
    return out


def check_figures(section: str, figures: dict) -> None:
    """Refuse figures ``render.py`` could not show (a bench bug, caught when it records)."""
    if not isinstance(figures, dict):
        raise TypeError(f"results: {section}: figures must be a dict")
    unknown = set(figures) - set(FIGURE_KEYS)
    if unknown:
        raise ValueError(f"results: {section}: unknown keys {sorted(unknown)} (known: {FIGURE_KEYS})")
    for row in figures.get("headline", []):
        if set(row) - set(HEADLINE_KEYS) or "figure" not in row or "value" not in row:
            raise ValueError(f"results: {section}: a headline row needs figure and value "
                             f"(and may have {HEADLINE_KEYS}): {row}")
    for t in figures.get("tables", []):
        columns = t.get("columns", [])
        if not columns or any(len(r) != len(columns) for r in t.get("rows", [])):
            raise ValueError(f"results: {section}: table {t.get('title')!r}: every row needs "
                             f"{len(columns)} cells, one per column")


def load(path: str | None = None) -> dict:
    path = results_path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        data = {}
    data.setdefault("sections", {})
    return data


def record(section: str, figures: dict, *, title: str | None = None, path: str | None = None) -> dict:
    """Replace ``section`` of the results file with ``figures``, stamped with this machine, the
    date and the versions; returns the section as written. The file is replaced atomically."""
    path = results_path(path)
    check_figures(section, figures)
    data = load(path)
    old = data["sections"].get(section, {})
    entry = {"title": title or old.get("title") or section,
             "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             "machine": machine(), "versions": versions(), "figures": figures}
    data["sections"][section] = entry
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"(figures recorded in {os.path.relpath(path)}, section {section!r})", file=sys.stderr)
    return entry


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    """``a / b`` rounded, or None when either is missing (a tool not installed)."""
    if a is None or not b:
        return None
    return round(a / b, digits)
