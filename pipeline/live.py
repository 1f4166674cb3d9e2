"""Outputs written while a pipeline runs: ``.mpd`` (DASH) of encoded chunks, fed by the planner
as each sink item arrives (``LiveDash``), so a player can start before the run ends."""

from __future__ import annotations


class LiveDash:
    """The ``.mpd`` outputs of encoded chunks written while the job runs (``media_io.DashWriter``):
    the planner tells of each sink item as it arrives; a thread reads it from the job's storage
    and muxes it in frame order, so a player can start before the run ends. A piece that cannot be
    streamed (not VP8) drops that output back to being written at the end. ``finish`` returns
    output -> seconds until its manifest first appeared. ``timing``: the file whose variable
    frame rate the outputs keep (``pipeline.outputs.timing_source``)."""

    def __init__(self, spec, outputs, planner, where: str, job_id: str, sound: str | None = None,
                 timing: str | None = None):
        import queue

        from media.video import frame_times
        from pipeline import media_io

        live = {n: p for n, p in outputs.items()
                if p.lower().endswith(".mpd") and spec.outputs[n].port_type == "chunks"}
        times = frame_times(timing) if timing and live else None
        self.writers = {n: media_io.DashWriter(p, sound=sound, times=times) for n, p in live.items()}
        self.where, self.job_id = where, job_id
        self.queue: queue.Queue = queue.Queue()
        self.failed: set[str] = set()
        self.thread = None
        if self.writers:
            planner.on_output = lambda sink, items: [self.queue.put((sink, i)) for i in items
                                                     if sink in self.writers]

    def __enter__(self):
        import threading

        if self.writers:
            self.thread = threading.Thread(target=self._drain, name="excamera-dash", daemon=True)
            self.thread.start()
        return self

    def _drain(self) -> None:
        from storage import open_storage
        from pipeline.values import decode

        store = None
        while (x := self.queue.get()) is not None:
            sink, item = x
            if sink in self.failed:
                continue
            try:
                store = store or open_storage(self.where).scoped(f"jobs/{self.job_id}")
                self.writers[sink].add(decode("chunks", store.get(item.key)))
            except Exception:  # noqa: BLE001 - not streamable: written whole at the end instead
                self.failed.add(sink)
                self.writers[sink].abort()

    def __exit__(self, exc_type, exc, tb):
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None
        if exc_type is not None:
            for w in self.writers.values():
                w.abort()
        return False

    def finish(self) -> dict[str, float]:
        out = {}
        for name, w in self.writers.items():
            if name in self.failed:
                continue
            try:
                w.close()
            except ValueError:
                continue          # written whole at the end instead
            out[name] = w.first_manifest_s if w.first_manifest_s is not None else float("nan")
        return out
