"""ffmpeg filtergraph strings, run in process through PyAV's ``av.filter.Graph``.

PyAV's ``Graph`` has no string parser, so this module parses ffmpeg's filtergraph syntax
(``ffmpeg-filters(1)``, "Filtergraph syntax"; ``ffmpeg-utils(1)``, "Quoting and escaping") into a
small AST and builds the graph with ``Graph.add`` and ``link_to``, as libavfilter's own parser
does:

* a graph is chains separated by ``;``, a chain is filters separated by ``,``;
* a filter is ``[in]...[in]name[@id][=args][out]...[out]``; ``[label]`` pads link chains: an
  output label links to the input of the same name, before or after it;
* inside a chain, a filter's unlabelled outputs feed the next filter's first inputs (before its
  own input labels); a chain that ends with an unlabelled output and is followed by ``;`` is an
  error (as in ffmpeg); the last chain's unlabelled outputs, and output labels nobody reads, are
  the graph's outputs, in order;
* first escaping level (``av_get_token``): ``\\`` takes the next character literally, ``'...'``
  quotes literally, unquoted leading/trailing whitespace is dropped. The args string that results
  goes to the filter's ``avfilter_init_str`` unchanged, which applies the second level (``:``
  between options, ``key=value`` or positional) exactly as ffmpeg does. ``FilterSpec.options``
  shows that second level, for reading.

Inputs: the graph runs on ``n`` input streams. An input label that no output defines names one:
``[0]``, ``[0:v]``, ``[0:v:0]`` (stream 0), ``[in]`` (stream 0); unlabelled open inputs take the
streams no label names, in order (``hstack`` with two streams is ``[0][1]hstack``). A stream named
twice is fed to both through an inserted ``split``. Every output ends in ``format=yuv420p`` (what
``ffmpeg -pix_fmt yuv420p`` appends), ``copy`` (pictures with positive line sizes) and a
buffersink.

Pictures are pushed as yuv420p frames with pts = frame number, time base ``1/fps`` and a 1:1
sample aspect ratio; all of an input's frames are pushed, then EOF, then every output is drained.
Errors are one line: ``FilterSyntaxError`` (with the character position), ``UnknownFilterError``,
``FilterGraphError`` (ffmpeg refusing arguments, links or the graph).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from foundation.errors import ExcameraError
from pipeline.values import FrameBatch

WHITESPACE = " \n\t\r"


class FilterGraphError(ExcameraError):
    """A filtergraph that cannot be built or run (one line)."""


class FilterSyntaxError(FilterGraphError):
    """A filtergraph string that does not parse; ``position`` is the 0-based character offset."""

    def __init__(self, text: str, position: int, what: str):
        self.position = position
        super().__init__(f"filtergraph {text!r}: {what} at character {position}")


class UnknownFilterError(FilterGraphError):
    """A filter name ffmpeg does not have."""


# -- the AST --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FilterSpec:
    """One filter: ``name``, optional instance ``id`` (``name@id``), ``args`` after the first
    escaping level (None without ``=``), input and output labels, and where it starts."""

    name: str
    id: str | None = None
    args: str | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    position: int = 0

    @property
    def options(self) -> tuple[tuple[str | None, str], ...]:
        """The args split at the second level: ``(key, value)`` or ``(None, value)`` positional."""
        if self.args is None:
            return ()
        out = []
        rest = self.args
        while True:
            m = re.match(r"([A-Za-z0-9_./-]+)=", rest)
            key = None
            if m:
                key, rest = m.group(1), rest[m.end():]
            value, rest = _token(rest, 0, ":")
            out.append((key, value))
            if not rest.startswith(":"):
                return tuple(out)
            rest = rest[1:]


@dataclass(frozen=True)
class Graph:
    """Chains of filters, in order."""

    chains: tuple[tuple[FilterSpec, ...], ...]
    text: str = ""

    @property
    def filters(self) -> tuple[FilterSpec, ...]:
        return tuple(f for chain in self.chains for f in chain)


# -- parsing --------------------------------------------------------------------------------------

def _token(text: str, i: int, term: str) -> tuple[str, str]:
    """``av_get_token``: the token at ``text[i:]`` up to an unescaped, unquoted character of
    ``term``; returns it and the rest (starting at the terminator). An unterminated quote is an
    error here (ffmpeg silently takes it to the end)."""
    out, i = _scan(text, i, term)
    return out, text[i:]


def _scan(text: str, i: int, term: str, source: str | None = None) -> tuple[str, int]:
    n = len(text)
    while i < n and text[i] in WHITESPACE:
        i += 1
    out: list[str] = []
    keep = 0  # length of out that trailing-whitespace trimming may not cut into
    while i < n and text[i] not in term:
        c = text[i]
        i += 1
        if c == "\\" and i < n:
            out.append(text[i])
            i += 1
            keep = len(out)
        elif c == "'":
            end = text.find("'", i)
            if end < 0:
                raise FilterSyntaxError(source if source is not None else text, i - 1,
                                        "unterminated quote")
            out.extend(text[i:end])
            i = end + 1
            keep = len(out)
        else:
            out.append(c)
    while len(out) > keep and out[-1] in WHITESPACE:
        out.pop()
    return "".join(out), i


def parse(text: str) -> Graph:
    """Parse a filtergraph string into a ``Graph`` (``FilterSyntaxError`` with the position)."""
    if not isinstance(text, str):
        raise FilterGraphError(f"a filtergraph is a string, not {type(text).__name__}")
    p = _Parser(text)
    return p.graph()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.i = 0

    def error(self, what: str, at: int | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(self.text, self.i if at is None else at, what)

    def skip(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in WHITESPACE:
            self.i += 1

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def graph(self) -> Graph:
        self.skip()
        if not self.peek():
            raise self.error("empty filtergraph")
        chains = []
        while True:
            chains.append(self.chain())
            self.skip()
            c = self.peek()
            if not c:
                return Graph(tuple(chains), self.text)
            if c != ";":
                raise self.error(f"unexpected {c!r}")
            self.i += 1
            self.skip()
            if not self.peek():
                raise self.error("empty filterchain after ';'")

    def chain(self) -> tuple[FilterSpec, ...]:
        filters = [self.filter()]
        while True:
            self.skip()
            if self.peek() != ",":
                return tuple(filters)
            self.i += 1
            filters.append(self.filter())

    def labels(self) -> tuple[str, ...]:
        out = []
        while True:
            self.skip()
            if self.peek() != "[":
                return tuple(out)
            start = self.i
            end = self.text.find("]", start + 1)
            if end < 0:
                raise self.error("unterminated label", start)
            label = self.text[start + 1:end].strip(WHITESPACE)
            if not label or any(c in label for c in "[;,'\\"):
                raise self.error(f"bad label {self.text[start:end + 1]!r}", start)
            out.append(label)
            self.i = end + 1

    def filter(self) -> FilterSpec:
        inputs = self.labels()
        self.skip()
        start = self.i
        name, self.i = _scan(self.text, self.i, "=,;[]", self.text)
        if not name:
            c = self.peek()
            raise self.error(f"missing filter name before {c!r}" if c else "missing filter name", start)
        fid = None
        if "@" in name:
            name, fid = name.split("@", 1)
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise self.error(f"bad filter name {name!r}", start)
        args = None
        if self.peek() == "=":
            self.i += 1
            args, self.i = _scan(self.text, self.i, "[],;", self.text)
        if self.peek() == "]":
            raise self.error("unexpected ']'")
        outputs = self.labels()
        return FilterSpec(name, fid, args, inputs, outputs, start)


# -- building and running -------------------------------------------------------------------------

_SOURCE = re.compile(r"(\d+)(?::v(?::0)?)?")


def _source_index(label: str, n_inputs: int) -> int | None:
    if label == "in" and n_inputs == 1:
        return 0
    m = _SOURCE.fullmatch(label)
    return int(m.group(1)) if m else None


def _ffmpeg(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e).split())


class FilterGraph:
    """A parsed filtergraph for ``n_inputs`` input streams; ``run`` builds a fresh PyAV graph for
    the given pictures and returns one ``FrameBatch`` list entry per graph output."""

    def __init__(self, text: str, n_inputs: int = 1):
        self.text = text
        self.n_inputs = n_inputs
        self.graph = parse(text)
        import av.filter
        for f in self.graph.filters:
            try:
                av.filter.Filter(f.name)
            except ValueError:
                raise UnknownFilterError(f"filtergraph {text!r}: unknown filter {f.name!r} "
                                         f"(at character {f.position})") from None

    def run(self, batches: list[FrameBatch]) -> list[FrameBatch | None]:
        """Filter ``batches`` (one per input stream, all frames of each); one batch per graph
        output, None for an output that produced no picture. Output frames are numbered from the
        first input's ``start`` at its ``fps``."""
        import av
        if len(batches) != self.n_inputs:
            raise FilterGraphError(f"filtergraph {self.text!r} was built for {self.n_inputs} "
                                   f"inputs, got {len(batches)}")
        g = av.filter.Graph()
        g.threads = 1
        sources, sinks = _Builder(self, g, batches).build()
        try:
            g.configure()
        except av.error.FFmpegError as e:
            raise FilterGraphError(f"filtergraph {self.text!r}: ffmpeg cannot configure it: "
                                   f"{_ffmpeg(e)}") from None
        from media.firstpass import _av_frame
        try:
            for index, ctx in sources.items():
                batch = batches[index]
                tb = Fraction(batch.fps[1], batch.fps[0])
                for i in range(batch.count):
                    ctx.push(_av_frame(av, batch.image(i), batch.start + i, tb))
                ctx.push(None)
            limit = MAX_GROWTH * sum(b.count for b in batches) + MAX_EXTRA
            pictures = _drain(av, sinks, limit, self.text)
        except av.error.FFmpegError as e:
            raise FilterGraphError(f"filtergraph {self.text!r}: ffmpeg failed: {_ffmpeg(e)}") from None
        first = batches[0]
        out = []
        for images in pictures:
            if not images:
                out.append(None)
                continue
            sizes = {(im.width, im.height) for im in images}
            if len(sizes) > 1:
                raise FilterGraphError(f"filtergraph {self.text!r} changes the picture size "
                                       f"mid-stream ({sorted(sizes)})")
            out.append(FrameBatch.from_images(images, first.start, first.fps, first.meta))
        return out


#: A graph may make at most this many pictures per input picture, plus MAX_EXTRA (a guard
#: against ``loop=-1`` and friends, which never end).
MAX_GROWTH = 16
MAX_EXTRA = 1024


def _drain(av, sinks, limit: int, text: str) -> list[list]:
    """Pull every sink until EOF, round robin (a sink may wait on another's progress)."""
    from media.video import _frame_to_image
    pictures: list[list] = [[] for _ in sinks]
    live = set(range(len(sinks)))
    while live:
        progress = False
        for k in sorted(live):
            try:
                frame = sinks[k].pull()
            except av.error.EOFError:
                live.discard(k)
                progress = True
                continue
            except av.error.BlockingIOError:
                continue
            pictures[k].append(_frame_to_image(frame, len(pictures[k])))
            progress = True
            if len(pictures[k]) > limit:
                raise FilterGraphError(f"filtergraph {text!r} made more than {limit} pictures "
                                       "from its input; it looks endless")
        if not progress:
            raise FilterGraphError("the filtergraph stalled with its inputs at end of stream")
    return pictures


class _Builder:
    """Adds the filters of a parsed graph to a PyAV graph and links them (libavfilter's rules)."""

    def __init__(self, fg: FilterGraph, g, batches: list[FrameBatch]):
        self.fg, self.g, self.batches = fg, g, batches
        self.text = fg.text

    def error(self, what: str) -> FilterGraphError:
        return FilterGraphError(f"filtergraph {self.text!r}: {what}")

    def add(self, name: str, args: str | None, where: str):
        import av
        try:
            return self.g.add(name, args)
        except (av.error.FFmpegError, ValueError) as e:
            raise self.error(f"{where}: ffmpeg refuses {name}={args or ''}: {_ffmpeg(e)}") from None

    def link(self, a, pa: int, b, pb: int) -> None:
        import av
        try:
            a.link_to(b, pa, pb)
        except av.error.FFmpegError as e:
            raise self.error(f"cannot link {a.name} to {b.name}: {_ffmpeg(e)}") from None

    def build(self):
        """Every filter added and linked; returns the buffer sources (by input stream) and the
        buffersinks (one per graph output, in order)."""
        self.pending: dict[str, list] = {}   # input label -> [(ctx, pad)] waiting for an output
        self.labelled: dict[str, tuple] = {}  # output label -> (order, ctx, pad) not yet read
        self.unlabelled_in: list[tuple] = []  # open input pads, in order
        self.order = 0                        # outputs are numbered as they appear
        outs: list[tuple] = []                # (order, ctx, pad): graph outputs
        chains = self.fg.graph.chains
        for ci, chain in enumerate(chains):
            prev: list[tuple] = []            # unlabelled output pads of the previous filter
            for f in chain:
                prev = self.add_filter(f, prev)
            if prev and ci < len(chains) - 1:
                raise self.error(f"chain {ci + 1} ends with an unlabelled output before ';'")
            for ctx, pad in prev:
                outs.append((self.order, ctx, pad))
                self.order += 1
        outs = sorted(outs + list(self.labelled.values()), key=lambda o: o[0])
        if not outs:
            raise self.error("it has no output")
        return self.sources(self.pending, self.unlabelled_in), [self.sink(c, p) for _, c, p in outs]

    def add_filter(self, f: FilterSpec, prev: list[tuple]) -> list[tuple]:
        """Add ``f``: the previous filter's unlabelled outputs, then its input labels, feed its
        inputs in order; its output labels name its outputs in order. Returns its unlabelled
        outputs (for the next filter of the chain)."""
        where = f"{f.name} at character {f.position}"
        ctx = self.add(f.name, f.args, where)
        n_in, n_out = len(ctx.inputs), len(ctx.outputs)
        feeds = [("pad", p) for p in prev] + [("label", label) for label in f.inputs]
        if len(feeds) > n_in:
            raise self.error(f"{where} has {n_in} input{'s' * (n_in != 1)}, given {len(feeds)}")
        for pad, (kind, x) in enumerate(feeds):
            if kind == "pad":
                self.link(x[0], x[1], ctx, pad)
            elif x in self.labelled:
                _, src, sp = self.labelled.pop(x)
                self.link(src, sp, ctx, pad)
            else:
                self.pending.setdefault(x, []).append((ctx, pad))
        self.unlabelled_in += [(ctx, pad) for pad in range(len(feeds), n_in)]
        if len(f.outputs) > n_out:
            raise self.error(f"{where} has {n_out} output{'s' * (n_out != 1)}, "
                             f"given {len(f.outputs)} labels")
        for pad, label in enumerate(f.outputs):
            if label in self.labelled:
                raise self.error(f"output label [{label}] is defined twice")
            if label in self.pending:
                dst, dp = self.pending[label].pop(0)
                if not self.pending[label]:
                    del self.pending[label]
                self.link(ctx, pad, dst, dp)
            else:
                self.labelled[label] = (self.order, ctx, pad)
            self.order += 1
        return [(ctx, pad) for pad in range(len(f.outputs), n_out)]

    def sources(self, pending: dict, unlabelled_in: list) -> dict:
        n = self.fg.n_inputs
        uses: dict[int, list] = {}
        for label, pads in pending.items():
            index = _source_index(label, n)
            if index is None:
                raise self.error(f"no output is labelled [{label}], and it names no input stream")
            if index >= n:
                raise self.error(f"[{label}] names input stream {index}, but there "
                                 f"{'is' if n == 1 else 'are'} {n}")
            uses.setdefault(index, []).extend(pads)
        free = [i for i in range(n) if i not in uses]
        if not uses and not unlabelled_in:
            raise self.error("it reads none of its input streams (a source filter alone never ends)")
        if len(unlabelled_in) > len(free):
            raise self.error(f"{len(unlabelled_in)} unlabelled input pad(s) but only {len(free)} "
                             "input stream(s) left for them")
        for index, pad in zip(free, unlabelled_in):
            uses[index] = [pad]
        out = {}
        for index in sorted(uses):
            b = self.batches[index]
            src = self.add("buffer", f"video_size={b.width}x{b.height}:pix_fmt=yuv420p:"
                           f"time_base={b.fps[1]}/{b.fps[0]}:frame_rate={b.fps[0]}/{b.fps[1]}:"
                           "pixel_aspect=1/1", f"input {index}")
            pads = uses[index]
            if len(pads) > 1:
                split = self.add("split", str(len(pads)), f"input {index}")
                self.link(src, 0, split, 0)
                for k, (ctx, pad) in enumerate(pads):
                    self.link(split, k, ctx, pad)
            else:
                self.link(src, 0, *pads[0])
            out[index] = src
        return out

    def sink(self, ctx, pad):
        fmt = self.add("format", "pix_fmts=yuv420p", "output")
        self.link(ctx, pad, fmt, 0)
        # vflip and friends hand out pictures with negative line sizes; copy makes them plain.
        copy = self.add("copy", None, "output")
        self.link(fmt, 0, copy, 0)
        sink = self.add("buffersink", None, "output")
        self.link(copy, 0, sink, 0)
        return sink


def run_filter(text: str, batches: list[FrameBatch]) -> list[FrameBatch | None]:
    """Parse ``text`` and run it on ``batches`` (one per input stream)."""
    return FilterGraph(text, len(batches)).run(batches)


__all__ = ["FilterGraph", "FilterGraphError", "FilterSpec", "FilterSyntaxError", "Graph",
           "UnknownFilterError", "parse", "run_filter"]
