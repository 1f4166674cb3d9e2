"""The documentation site builds with --strict, and its generated pages hold what the code has.

The reference pages are generated at build time (docs/hooks.py) from ``excamera.cli.build_parser()``
and the stage and delivery-function registries; these tests check the built HTML names every
subcommand, every flag, every stage and every delivery function, so a page that silently lost
them fails here. The benchmark page is generated from bench/results.json by bench/render.py; the
committed page and the README's table must be what the committed figures make.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import render  # noqa: E402  (bench/ is not a package)
import results  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([os.path.join(BIN, "mkdocs"), "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def page_text(site, *parts) -> str:
    with open(os.path.join(site, *parts, "index.html"), encoding="utf-8") as f:
        return html.unescape(re.sub(r"<[^>]+>", " ", f.read()))


def parsers(parser: argparse.ArgumentParser):
    """Every parser under ``parser``, subcommands of subcommands included."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from parsers(sub)


def test_cli_reference_names_every_command_and_flag(site):
    from excamera.cli import build_parser

    text = page_text(site, "reference", "cli")
    commands = [p.prog for p in parsers(build_parser())][1:]
    assert len(commands) > 10
    for prog in commands:
        assert prog in text, f"{prog} missing from the CLI reference"
    for p in parsers(build_parser()):
        for action in p._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in text, f"{p.prog} {flag} missing from the CLI reference"


def test_stage_reference_names_every_stage_and_delivery_function(site):
    from pipeline.delivery import builtin_names
    from pipeline.stage import all_stages

    text = page_text(site, "reference", "stages")
    # The project's own stages (tests register stages of their own into the same registry).
    stages = {n: d for n, d in all_stages().items() if d.fn.__module__.startswith("pipeline.")}
    assert {"decode", "grayscale", "encode", "excamera_encode"} <= set(stages)
    for name, d in stages.items():
        assert f" {name} " in text, f"stage {name} missing from the stage reference"
        for option in d.options:
            assert option in text, f"option {option} of stage {name} missing"
    for name in builtin_names():
        assert name in text, f"delivery function {name} missing from the stage reference"


def test_design_pages_have_the_sections_docstrings_cite(site):
    for page, section in (("architecture", "Layout"), ("architecture", "Dependency direction"),
                          ("cli", "CLI contract"), ("data-path", "No funnel"), ("cloud", "Cloud backend"),
                          ("engine", "Lifecycle tables"), ("algorithm", "The job on the runtime")):
        assert section in page_text(site, "design", page), f"design/{page}: no section {section!r}"
    engine = page_text(site, "design", "engine")
    assert "superseded" in engine and "stopping" in engine     # the generated lifecycle tables
    algorithm = page_text(site, "design", "algorithm")              # the generated encode FSMs
    assert all(op in algorithm for op in ("vp8-encode-given-state", "vp8-rebase-batch", "decode-range"))


def test_api_reference_renders_the_public_modules(site):
    text = page_text(site, "reference", "api", "jobs")
    assert "run_job" in text and "run_pipeline" in text and "RunConfig" in text
    assert "DecoderState" in page_text(site, "reference", "api", "codec")
    assert "open_video" in page_text(site, "reference", "api", "media")
    assert "open_storage" in page_text(site, "reference", "api", "storage")


def test_errors_page_lists_the_error_classes(site):
    text = page_text(site, "reference", "errors")
    for name in ("ExcameraError", "VP8Error", "StorageError", "SpecError"):
        assert name in text


def test_committed_benchmark_pages_are_current():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "render.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_record_merges_sections_with_machine_date_and_versions(tmp_path):
    path = str(tmp_path / "results.json")
    results.record("one", {"tables": [{"title": "t", "columns": ["a", "b"], "rows": [[1, 2.5]]}]}, path=path)
    results.record("two", {"headline": [{"figure": "f", "value": "1.5x", "against": "ref", "target": "<= 2x"}]},
                   title="Two", path=path)
    data = json.load(open(path))
    assert set(data["sections"]) == {"one", "two"}
    two = data["sections"]["two"]
    assert two["title"] == "Two" and two["machine"]["cores"] == os.cpu_count()
    assert two["versions"]["python"] and re.match(r"\d{4}-\d\d-\d\d ", two["date"])
    results.record("one", {"notes": ["again"]}, path=path)     # replaces its own section only
    data = json.load(open(path))
    assert data["sections"]["one"]["figures"] == {"notes": ["again"]} and "two" in data["sections"]


def test_record_refuses_figures_render_could_not_show(tmp_path):
    path = str(tmp_path / "results.json")
    with pytest.raises(ValueError, match="unknown keys"):
        results.record("x", {"tabels": []}, path=path)
    with pytest.raises(ValueError, match="one per column"):
        results.record("x", {"tables": [{"columns": ["a", "b"], "rows": [[1]]}]}, path=path)
    assert not os.path.exists(path)


def test_render_writes_the_page_and_the_readme_table(tmp_path):
    path = str(tmp_path / "results.json")
    results.record("decode", {"headline": [{"figure": "Decode | 720p", "value": "2.08x", "against": "vpxdec",
                                            "target": "<= 2.5x"}],
                              "tables": [{"title": "Times", "columns": ["input", "s", "ratio"],
                                          "rows": [["bbb", 1.64, None], ["bikes", 12345, 2.0]]}]},
                   title="Decode", path=path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{render.START}\nold\n{render.END}\n\nafter\n")
    page = tmp_path / "benchmarks.md"
    argv = ["--results", path, "--page", str(page), "--readme", str(readme)]
    assert render.main(argv + ["--check"]) == 1           # stale: nothing written yet
    assert not page.exists()
    assert render.main(argv) == 0
    text = page.read_text()
    assert "## Decode { #decode }" in text
    assert "| bbb | 1.64 | – |" in text and "| bikes | 12,345 | 2 |" in text
    assert "[Decode \\| 720p](#decode) | 2.08x | vpxdec | <= 2.5x |" in text
    assert "Measured " in text and "Python " in text
    new_readme = readme.read_text()
    assert "old" not in new_readme and "| Decode \\| 720p | 2.08x |" in new_readme
    assert new_readme.endswith("\n\nafter\n")
    assert render.main(argv + ["--check"]) == 0


def shown_commands():
    """(file, command line) of every ``excamera ...`` line in a sh block of the README and the
    docs, continuation lines joined, environment assignments and a trailing ``&`` dropped."""
    import glob
    import shlex

    files = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                                                                 recursive=True))
    for path in files:
        with open(path, encoding="utf-8") as f:
            blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", f.read(), re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words.pop(0)
                if words and words[-1] == "&":
                    words.pop()
                if words[:1] == ["excamera"]:
                    yield os.path.relpath(path, ROOT), words[1:]


def test_every_command_shown_in_the_docs_parses():
    """The README's and the guide's examples use commands and flags the parser has."""
    import contextlib
    import io

    from excamera.cli import build_parser

    shown = list(shown_commands())
    assert len(shown) > 20
    for path, argv in shown:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                build_parser().parse_args(argv)
            except SystemExit:
                pytest.fail(f"{path}: excamera {' '.join(argv)}: {err.getvalue().strip()}")
