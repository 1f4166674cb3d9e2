"""``--log-format json``: one JSON object per log line, for a log pipeline to index.

Each line holds the time (UTC, ISO 8601), level, logger and message, and the ids a record
carries as logging extras: ``job``, ``task``, ``attempt`` and ``worker`` (the engine and the
servicer pass them, e.g. ``log.warning(..., extra=ids(job=..., worker=...))``), so that every
line about one job or worker can be found without parsing its message. An exception's traceback
goes in ``exc`` as one string.
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: The logging extras copied into each line, in this order, when a record has them.
ID_FIELDS = ("job", "task", "attempt", "worker")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def ids(*, job: str | None = None, task: str | None = None, attempt: int | None = None,
        worker: str | None = None) -> dict:
    """The ``extra=`` of a log call: the ids given (None ones left out)."""
    given = {"job": job, "task": task, "attempt": attempt, "worker": worker}
    return {k: v for k, v in given.items() if v not in (None, "")}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ID_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(fmt: str = "text", level: int | str = logging.INFO, stream=None) -> None:
    """Log to ``stream`` (stderr) in ``fmt``: ``text`` (one readable line) or ``json``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else getattr(logging, level))
