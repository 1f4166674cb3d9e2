"""A local AWS Lambda Invoke endpoint for the tests: a real HTTP server on loopback that speaks
``POST /2015-03-31/functions/{name}/invocations`` as Lambda does, so boto3 reaches it with
``AWS_ENDPOINT_URL_LAMBDA`` exactly as it reaches AWS.

* ``X-Amz-Invocation-Type: Event``: 202 at once, and the real handler runs with the event in a
  fresh process (``tests/lambda_runner.py``) with a Lambda-like context; ``RequestResponse``
  waits for it and answers 200 with the handler's return value.
* an unknown function: 404 ``ResourceNotFoundException``;
* ``throttle_first=K``: the first K invocations are answered 429 ``TooManyRequestsException``;
* ``deliver=2``: every accepted event runs twice (Lambda delivers asynchronous events at least once);
* ``run=False``: events are accepted and kept (``events``), no handler runs (the launch-rate bench).

``Endpoint.runs`` records every handler run (request id, pid, the process, its summary);
``Endpoint.pids()`` the handler processes alive now, so tests can kill one mid-task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "lambda_runner.py"
PREFIX = "/2015-03-31/functions/"


@dataclass
class Run:
    request_id: str
    function: str
    event: bytes
    proc: subprocess.Popen
    started: float
    summary: dict | None = None
    returncode: int | None = None
    stderr: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class Endpoint:
    """``with Endpoint({"fn": {"timeout_s": 60, "memory_mb": 1024}}) as ep: ep.url``."""

    def __init__(self, functions: dict[str, dict], *, throttle_first: int = 0, deliver: int = 1,
                 env: dict[str, str] | None = None, runner_args: tuple[str, ...] = (), run: bool = True):
        self.functions = functions
        self.throttle_left = throttle_first
        self.throttled = 0
        self.deliver = deliver
        self.env = env or {}
        self.runner_args = list(runner_args)
        self.run = run  # False: accept events and keep them, run no handler (launch-rate benchmark)
        self.events: list[bytes] = []
        self.runs: list[Run] = []
        self.accepted = 0
        self.lock = threading.Lock()
        endpoint = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                endpoint._post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Endpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.kill()
            run.done.wait(10)

    def pids(self) -> list[int]:
        return [r.proc.pid for r in self.runs if r.proc.poll() is None]

    def summaries(self) -> list[dict]:
        return [r.summary for r in self.runs if r.summary is not None]

    # -- HTTP -----------------------------------------------------------------------------------

    def _answer(self, h, status: int, body: dict | bytes | None = None, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _error(self, h, status: int, code: str, message: str) -> None:
        self._answer(h, status, {"Type": "User", "message": message, "__type": code},
                     {"X-Amzn-ErrorType": code})

    def _post(self, h) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        path = h.path.split("?", 1)[0]
        if not (path.startswith(PREFIX) and path.endswith("/invocations")):
            return self._error(h, 404, "UnknownOperationException", f"no operation at {path}")
        name = unquote(path[len(PREFIX):-len("/invocations")]).rsplit(":function:", 1)[-1]
        fn = self.functions.get(name)
        if fn is None:
            return self._error(h, 404, "ResourceNotFoundException",
                               f"Function not found: arn:aws:lambda:us-east-1:123456789012:function:{name}")
        with self.lock:
            if self.throttle_left > 0:
                self.throttle_left -= 1
                self.throttled += 1
                throttle = True
            else:
                throttle = False
                self.accepted += 1
        if throttle:
            return self._error(h, 429, "TooManyRequestsException", "Rate Exceeded.")
        kind = h.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind == "Event" and not self.run:
            with self.lock:
                self.events.append(body)
            return self._answer(h, 202, b"")
        if kind == "Event":
            for _ in range(self.deliver):
                self._start(name, fn, body)
            return self._answer(h, 202, b"")
        run = self._start(name, fn, body)
        run.done.wait()
        return self._answer(h, 200, json.dumps(run.summary).encode(), {"X-Amz-Executed-Version": "$LATEST"})

    def _start(self, name: str, fn: dict, event: bytes) -> Run:
        request_id = str(uuid.uuid4())
        env = dict(os.environ)
        for k, v in self.env.items():  # None: unset, as in a Lambda sandbox
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(AWS_LAMBDA_FUNCTION_NAME=name, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(fn.get("memory_mb", 1024)))
        proc = subprocess.Popen(
            [sys.executable, str(RUNNER), "--function", name, "--timeout-s", str(fn.get("timeout_s", 900)),
             "--memory", str(fn.get("memory_mb", 1024)), "--request-id", request_id, *self.runner_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(ROOT))
        run = Run(request_id, name, event, proc, time.monotonic())
        with self.lock:
            self.runs.append(run)
        threading.Thread(target=self._wait, args=(run,), daemon=True).start()
        return run

    @staticmethod
    def _wait(run: Run) -> None:
        out, err = run.proc.communicate(run.event)
        run.returncode = run.proc.returncode
        run.stderr = err.decode("utf-8", "replace")[-4000:]
        lines = out.decode("utf-8", "replace").strip().splitlines()
        if lines:
            try:
                run.summary = json.loads(lines[-1])
            except ValueError:
                pass
        run.done.set()
