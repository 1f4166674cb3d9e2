"""What a pipeline run hands back: its one-line error, and the sinks' values written to the
output files (all of them or none)."""

from __future__ import annotations

import contextlib
import os

from foundation.errors import ExcameraError, one_line


class PipelineError(ExcameraError):
    """A pipeline that cannot run or did not finish: one line saying what and where."""


_line = one_line      # the name pipeline.run and pipeline.remote import


def _remove(paths) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            os.unlink(p)


def sound_source(spec, inputs) -> str | None:
    """The file whose sound the outputs carry: the first video source (by number) that has an
    audio stream; None when none has (``media.audio`` reads only its audio packets)."""
    from media.outputs import has_audio

    def number(name: str) -> int:
        digits = name.rpartition("_")[2]
        return int(digits) if digits.isdigit() else 0

    for name in sorted(inputs, key=number):
        ports = spec.inputs.get(name, {})
        video = any(t in ("chunks", "frames") or p.endswith("link") for p, t in ports.items())
        if video and has_audio(inputs[name]):
            return inputs[name]
    return None


def timing_source(spec, inputs) -> str | None:
    """The file whose frame times the outputs keep (the first video source by number; its
    times matter only when it plays at a variable rate, ``media.video.frame_times``)."""
    def number(name: str) -> int:
        digits = name.rpartition("_")[2]
        return int(digits) if digits.isdigit() else 0

    for name in sorted(inputs, key=number):
        ports = spec.inputs.get(name, {})
        if any(t in ("chunks", "frames") or p.endswith("link") for p, t in ports.items()):
            return inputs[name]
    return None


def write_outputs(spec, outputs, values_of, sound: str | None = None, timing: str | None = None) -> None:
    """Each sink's values (``values_of(name)``, in frame order) to its file, with the sound of
    the file ``sound`` (``sound_source``; None: silent) and the frame times of the file
    ``timing`` (``timing_source``) where it plays at a variable rate; on any failure none of the
    outputs is left behind."""
    from media.video import frame_times

    times = frame_times(timing) if timing else None
    from storage import StorageError
    from pipeline import media_io
    from pipeline.values import BadValue

    written = []
    try:
        for name, path in outputs.items():
            values = values_of(name)
            if not values:
                raise PipelineError(f"{name}: the pipeline produced nothing for this output")
            try:
                media_io.write_output(path, spec.outputs[name].port_type, values, sound, times=times)
            except (ValueError, OSError) as e:
                raise PipelineError(f"{name}: {_line(e)}") from None
            written.append(path)
    except (BadValue, StorageError) as e:
        _remove(written)
        raise PipelineError(_line(e)) from None
    except BaseException:
        _remove(written)
        raise
