"""A loopback HTTP server with byte ranges, for the tests of ranged sources (``media.source``).

Serves ``files`` (path -> bytes) with a strong ETag per version; ``GET`` honours one ``Range:
bytes=A-B`` (206 with ``Content-Range``; 416 past the end), ``If-Match`` (412 when the ETag
differs) and ``If-Range`` (the whole file, 200, when it differs). Knobs: ``ranges = False``
ignores Range (200, as a server without range support); ``change_after = N`` replaces every
file by another version (new bytes, new ETag) once N requests have been answered; ``log``
holds (method, path, Range header) of each request, ``sent`` the body bytes sent.
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer:
    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.version = 1
        self.ranges = True
        self.change_after: int | None = None
        self.log: list[tuple[str, str, str]] = []
        self.sent = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._answer(self, head=True)

            def do_GET(self):
                server._answer(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path.lstrip('/')}"

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path] + bytes([self.version])).hexdigest()[:20] + '"'

    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        with self._lock:
            if self.change_after is not None and len(self.log) >= self.change_after:
                self.version += 1
                self.files = {k: v[::-1] for k, v in self.files.items()}
                self.change_after = None
            path = h.path.lstrip("/")
            self.log.append((h.command, path, h.headers.get("Range", "")))
            data = self.files.get(path)
            etag = self.etag(path) if data is not None else ""
        if data is None:
            return self._send(h, 404, {}, b"not found", head)
        match = h.headers.get("If-Match")
        if match and match != etag:
            return self._send(h, 412, {"ETag": etag}, b"", head)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
        if_range = h.headers.get("If-Range")
        if not self.ranges or not m or (if_range and if_range != etag):
            return self._send(h, 200, {"ETag": etag}, data, head)
        a = int(m[1])
        b = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
        if a >= len(data):
            return self._send(h, 416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
        return self._send(h, 206, {"ETag": etag, "Content-Range": f"bytes {a}-{b}/{len(data)}"},
                          data[a:b + 1], head)

    def _send(self, h, status: int, headers: dict, body: bytes, head: bool) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Accept-Ranges", "bytes" if self.ranges else "none")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            try:
                h.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client read only what it wanted
                return
            with self._lock:
                self.sent += len(body)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def raw_h264(mp4: str, out: str) -> str:
    """The H.264 video of ``mp4`` as a raw Annex B stream (a stream copy: no index, the same
    pictures), written to ``out``."""
    import av

    with av.open(mp4) as src, av.open(out, "w", format="h264") as dst:
        stream = src.streams.video[0]
        copy = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is not None:
                packet.stream = copy
                dst.mux(packet)
    return out
