"""mkdocs hooks: the reference pages that are generated from the code, so they cannot drift.

A page holds a marker comment where generated Markdown goes:

* ``<!-- generated:cli -->`` (reference/cli.md): every command and flag, by walking the argparse
  parser that ``excamera.cli.build_parser()`` returns, subcommands included;
* ``<!-- generated:stages -->`` and ``<!-- generated:delivery -->`` (reference/stages.md): the
  pipespec stages and delivery functions, read from their registries;
* ``<!-- generated:lifecycles -->`` (design/engine.md): the engine's lifecycle tables;
* ``<!-- generated:encode-fsm -->`` (design/algorithm.md): the ExCamera encode's FSMs;
* ``<!-- generated:errors -->`` (reference/errors.md): every ``ExcameraError`` subclass, read
  from the sources without importing them.

Registries are read defensively: a module-level registry object (``names()``, ``get(name)``,
``items()``, as ``foundation.registry.Registry``) is preferred, else the older module functions
and dicts. A marker whose source cannot be read fails the build with one line naming it, rather
than publishing an empty page.
"""

from __future__ import annotations

import argparse
import html
import importlib
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

#: Usage lines are wrapped at this width whatever the terminal is, so builds are reproducible.
USAGE_WIDTH = 96


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, make in (("<!-- generated:cli -->", cli_reference),
                         ("<!-- generated:stages -->", stages_reference),
                         ("<!-- generated:delivery -->", delivery_reference),
                         ("<!-- generated:lifecycles -->", lifecycle_tables),
                         ("<!-- generated:errors -->", error_classes),
                         ("<!-- generated:encode-fsm -->", encode_fsms)):
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


# -- small Markdown helpers ----------------------------------------------------------------------

def cell(text) -> str:
    """Text fit for one Markdown table cell: one line, pipes escaped outside code spans (inside
    them Python-Markdown's tables take a pipe as it is, and would show the backslash)."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(str(text).split()))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def prose(text: str) -> str:
    """Plain help text as Markdown that shows it as written: ``<`` ``>`` ``&`` and ``*`` are
    escaped outside backtick spans (``<md5>`` would otherwise vanish as an HTML tag)."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(str(text).split()))
    return "".join(p if p.startswith("`") else
                   html.escape(p, quote=False).replace("*", "\\*").replace("_", "\\_") for p in parts)


def code(text) -> str:
    """Inline code that survives backticks inside it."""
    text = " ".join(str(text).split())
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the CLI -------------------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser):
    """(name, help, subparser) for each subcommand of ``parser``, aliases folded into their
    command, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            seen: dict[int, str] = {}
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen[id(sub)] = name
                yield name, helps.get(name, ""), sub


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    try:
        return formatter._expand_help(action)   # fills %(default)s, %(choices)s, ...
    except (KeyError, TypeError, ValueError):
        return action.help


def _argument_row(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or (action.dest.upper() if not action.choices else None)
            if metavar is None:
                metavar = "{" + ",".join(map(str, action.choices)) + "}"
            name += f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
    else:
        name = action.metavar if isinstance(action.metavar, str) else action.dest
        if action.nargs in ("*", "+"):
            name += " ..."
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        notes.append("one of " + ", ".join(code(c) for c in action.choices))
    default = action.default
    if (action.option_strings and action.nargs != 0 and default not in (None, argparse.SUPPRESS)
            and default not in ([], False) and "default" not in (action.help or "")):
        notes.append(f"default {code(default)}")
    text = prose(_help_text(parser, action))
    return [code(name), " ".join(filter(None, [text] + (["(" + "; ".join(notes) + ")"] if notes else [])))]


def _describe_parser(parser: argparse.ArgumentParser, level: int, summary: str) -> list[str]:
    out = [f"{'#' * level} {parser.prog}", ""]
    text = parser.description or summary
    if text:
        out += [prose(text), ""]
    out += ["```text", _usage(parser), "```", ""]
    for group in parser._action_groups:
        rows = [_argument_row(parser, a) for a in group._group_actions
                if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
                and a.help != argparse.SUPPRESS]
        if rows:
            title = (group.title or "arguments")
            out += [f"*{title[0].upper() + title[1:]}*", "", table(["argument", "what it does"], rows), ""]
    subs = list(_subparsers(parser))
    if subs:
        out += [table(["command", "what it does"],
                      [[f"[{code(sub.prog)}](#{_anchor(sub.prog)})", prose(text)] for _, text, sub in subs]), ""]
        for _, text, sub in subs:
            out += _describe_parser(sub, min(level + 1, 4), text)
    if parser.epilog:
        out += [prose(parser.epilog), ""]
    return out


def _anchor(title: str) -> str:
    """The id Python-Markdown's toc extension gives a heading with this text."""
    slug = re.sub(r"[^\w\s-]", "", title.lower()).strip()
    return re.sub(r"[-\s]+", "-", slug)


def cli_reference() -> str:
    from excamera.cli import build_parser

    parser = build_parser()
    subs = list(_subparsers(parser))
    if not subs:
        raise RuntimeError("docs hook: excamera.cli.build_parser() has no subcommands")
    out = ["```text", _usage(parser), "```", "",
           table(["command", "what it does"],
                 [[f"[{code(name)}](#{_anchor(sub.prog)})", prose(text)] for name, text, sub in subs]), ""]
    for _, text, sub in subs:
        out += _describe_parser(sub, 2, text)
    if parser.epilog:
        out += [prose(parser.epilog), ""]
    return "\n".join(out)


# -- registries ----------------------------------------------------------------------------------

def _is_registry(obj) -> bool:
    return (not isinstance(obj, type) and all(callable(getattr(obj, m, None)) for m in ("names", "get", "items"))
            and not isinstance(obj, dict))


def _registry(module_names: tuple[str, ...], kind: str):
    """A module-level registry object of ``kind`` in one of ``module_names``, or None."""
    found = []
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr in vars(module).values():
            if _is_registry(attr):
                found.append(attr)
    for reg in found:
        if getattr(reg, "kind", None) == kind:
            return reg
    return found[0] if len(found) == 1 else None


def _aliases_of(reg, name: str, entry) -> list[str]:
    aliases = list(getattr(entry, "aliases", ()) or ())
    table_ = getattr(reg, "_aliases", None)
    if isinstance(table_, dict):
        aliases += [a for a, n in table_.items() if n == name and a not in aliases]
    return sorted(a for a in aliases if a != name)


def _load_stage_modules() -> None:
    """Import the built-in stage modules, which register the stages."""
    stage = importlib.import_module("pipeline.stage")
    for name in getattr(stage, "BUILTIN_MODULES", ("pipeline.stages",)):
        importlib.import_module(name)


def _stage_entries() -> list[tuple[str, object, list[str]]]:
    _load_stage_modules()
    reg = _registry(("pipeline.stage", "pipeline.stages", "pipeline.registry"), "stage")
    if reg is not None:
        return [(n, e, _aliases_of(reg, n, e)) for n, e in reg.items()]
    stage = importlib.import_module("pipeline.stage")
    entries = stage.all_stages()
    return [(n, e, sorted(getattr(e, "aliases", ()) or ())) for n, e in sorted(entries.items())]


def _delivery_entries() -> list[tuple[str, object, list[str]]]:
    reg = _registry(("pipeline.delivery", "pipeline.registry"), "delivery function")
    if reg is not None:
        return [(n, e, _aliases_of(reg, n, e)) for n, e in reg.items()]
    delivery = importlib.import_module("pipeline.delivery")
    builtin = getattr(delivery, "_BUILTIN")
    return [(n, e, sorted(getattr(e, "aliases", ()) or ())) for n, e in sorted(builtin.items())]


def _doc(entry) -> str:
    text = getattr(entry, "doc", "") or ""
    fn = getattr(entry, "fn", None)
    if not text and fn is not None:
        text = fn.__doc__ or ""
    import inspect
    return inspect.cleandoc(text) if text else ""


def _option_rows(options: dict) -> list[list[str]]:
    rows = []
    for name, opt in (options or {}).items():
        typ = getattr(getattr(opt, "type", None), "__name__", str(getattr(opt, "type", "")))
        required = getattr(opt, "required", False)
        default = "required" if required else code(repr(getattr(opt, "default", "")))
        choices = getattr(opt, "choices", ()) or ()
        help_ = getattr(opt, "help", "") or ""
        if choices:
            help_ += (" " if help_ else "") + "(one of " + ", ".join(code(c) for c in choices) + ")"
        rows.append([code(name), typ, default, help_])
    return rows


def _ports(ports: dict, optional=()) -> str:
    if not ports:
        return "none"
    return ", ".join(f"{code(p)}: {t}" + (" (optional)" if p in optional else "") for p, t in ports.items())


def stages_reference() -> str:
    entries = _stage_entries()
    if not entries:
        raise RuntimeError("docs hook: no pipespec stages registered")
    out = [table(["stage", "inputs", "outputs", "what it does"],
                 [[f"[{code(n)}](#stage-{_anchor(n)})", _ports(getattr(e, "inputs", {})),
                   _ports(getattr(e, "outputs", {})), (_doc(e).split("\n\n")[0])]
                  for n, e, _ in entries]), ""]
    for name, entry, aliases in entries:
        out += [f"### `{name}` {{ #stage-{_anchor(name)} }}", ""]
        doc = _doc(entry)
        if doc:
            out += [doc, ""]
        facts = [f"**Inputs:** {_ports(getattr(entry, 'inputs', {}), getattr(entry, 'optional_inputs', ()))}",
                 f"**Outputs:** {_ports(getattr(entry, 'outputs', {}))}"]
        delivery = getattr(entry, "delivery", "")
        if delivery:
            facts.append(f"**Default delivery function:** {code(delivery)}")
        if aliases:
            facts.append("**Also named:** " + ", ".join(code(a) for a in aliases))
        if getattr(entry, "extra", ""):
            facts.append(f"**Needs:** `pip install 'excamera[{entry.extra}]'`")
        if getattr(entry, "steal", ""):
            facts.append(f'**Work stealing:** a node may set `"steal": true` ({entry.steal})')
        out += ["- " + f for f in facts] + [""]
        rows = _option_rows(getattr(entry, "options", {}))
        if rows:
            out += [table(["option", "type", "default", "what it does"], rows), ""]
    return "\n".join(out)


def delivery_reference() -> str:
    entries = _delivery_entries()
    if not entries:
        raise RuntimeError("docs hook: no delivery functions registered")
    out = []
    for name, entry, aliases in entries:
        out += [f"### `{name}` {{ #delivery-{_anchor(name)} }}", ""]
        doc = _doc(entry)
        if doc:
            out += [doc, ""]
        ports = getattr(entry, "ports", None)
        facts = [f"**Streaming input ports:** {'any number' if ports is None else ports}"]
        if aliases:
            facts.append("**Also named:** " + ", ".join(code(a) for a in aliases))
        out += ["- " + f for f in facts] + [""]
        rows = _option_rows(getattr(entry, "options", {}))
        if rows:
            out += ["Options it reads from the node's `config`:", "",
                    table(["option", "type", "default", "what it does"], rows), ""]
    return "\n".join(out)


# -- the engine's lifecycles ---------------------------------------------------------------------

def _label(value) -> str:
    return str(getattr(value, "value", value))


def lifecycle_tables() -> str:
    engine = importlib.import_module("coordinator.engine")
    tables = getattr(engine, "TABLES", None)
    if not isinstance(tables, dict) or not tables:
        tables = {name[:-len("_TRANSITIONS")].lower(): value for name, value in vars(engine).items()
                  if name.endswith("_TRANSITIONS") and isinstance(value, dict)}
    if not tables:
        raise RuntimeError("docs hook: coordinator.engine has no lifecycle tables")
    out = []
    for name, transitions in tables.items():
        rows = [[code(_label(src)), code(_label(dst)), why]
                for src, edges in transitions.items() for dst, why in edges.items()]
        terminal = [code(_label(s)) for s, edges in transitions.items() if not edges]
        out += [f"### {_label(name).capitalize()}", "",
                table(["from", "to", "when"], rows), ""]
        if terminal:
            out += [f"Terminal: {', '.join(terminal)}.", ""]
    return "\n".join(out)


# -- the error classes ---------------------------------------------------------------------------

#: The packages whose error classes the errors page lists (read statically: nothing is imported).
ERROR_PACKAGES = ("foundation", "codec", "storage", "security", "media", "protos", "rendezvous",
                  "coordinator", "worker", "pipeline", "awslambda", "excamera")


def _class_defs():
    """(module, class name, base names, first docstring line) of every class in the packages."""
    import ast

    for package in ERROR_PACKAGES:
        for folder, _, names in sorted(os.walk(os.path.join(ROOT, package))):
            for name in sorted(names):
                if not name.endswith(".py") or name.endswith("_pb2.py") or name.endswith("_pb2_grpc.py"):
                    continue
                path = os.path.join(folder, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                for node in tree.body:
                    if isinstance(node, ast.ClassDef):
                        bases = [b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")
                                 for b in node.bases]
                        doc = (ast.get_docstring(node) or "").split("\n\n")[0]
                        yield module, node.name, bases, " ".join(doc.split())


def error_classes() -> str:
    """Every subclass of ``foundation.errors.ExcameraError``, found by reading the sources."""
    defs = list(_class_defs())
    family, grew = {"ExcameraError"}, True
    while grew:
        grew = False
        for _, name, bases, _ in defs:
            if name not in family and family.intersection(bases):
                family.add(name)
                grew = True
    rows = [[f"`{module}.{name}`", ", ".join(f"`{b}`" for b in bases) or "–", prose(doc)]
            for module, name, bases, doc in sorted(defs, key=lambda d: (d[0], d[1]))
            if name in family]
    if len(rows) < 2:
        raise RuntimeError("docs hook: found no subclasses of foundation.errors.ExcameraError")
    return table(["class", "bases", "what it means"], rows)


# -- the ExCamera encode's FSMs ------------------------------------------------------------------

def _call_with_timeouts(fn):
    """``fn`` called with 60 s for each of its required parameters (timeouts, for a listing)."""
    import inspect

    required = [p for p in inspect.signature(fn).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return fn(*[60.0] * len(required))


def encode_fsms() -> str:
    """The FSMs of ``coordinator.excamera_job`` (decode, chunk, batch rebase, stitch, and the
    output's assemble and join), state by state."""
    job = importlib.import_module("coordinator.excamera_job")
    out = []
    for maker in ("decode_fsm", "chunk_fsm", "rebase_fsm", "stitch_fsm", "stitch_links_fsm",
                  "assemble_fsm", "join_fsm"):
        fsm = _call_with_timeouts(getattr(job, maker))
        rows = []
        for s in fsm.states:
            args = ", ".join(f"{k}={v}" for k, v in s.args.items())
            edges = ", ".join(f"{o} → {t}" for o, t in s.on.items())
            rows.append([code(s.name), code(s.operation), code(args) if args else "", edges])
        out += [f"`{fsm.name}` (`coordinator.excamera_job.{maker}`), starting at `{fsm.initial}`:", "",
                table(["state", "operation", "arguments", "next"], rows), ""]
    return "\n".join(out)
