"""A real local HTTP server speaking the OpenAI chat-completions protocol, driven by a script.

    with FakeOpenAI([error(429, retry_after=0.1), answer("```python\\n...\\n```")]) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.requests[0].headers["authorization"] == "Bearer sk-test"

Each scripted Step is consumed by one POST /v1/chat/completions, in order. Scripts may also be kept
per model (`FakeOpenAI(scripts={"coder-m": [...], "judge-m": [...]})`) so a session whose Coder and
Judge use different models gets the right answers whatever the order, or a `responder(request) -> Step`
may decide from the request itself. A request with nothing left to answer gets HTTP 400 (not retried,
so a test fails fast) and is counted in `unanswered`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (longer than the client's timeout: a timeout)
    usage: dict | None | bool = True  # True: counted from characters; None/False: omitted; dict: sent as is
    body: str | None = None  # raw response body, replacing the normal completion JSON
    finish_reason: str = "stop"


def answer(content: str, *, usage: dict | None | bool = True, delay_s: float = 0.0,
           finish_reason: str = "stop") -> Step:
    return Step(content=content, usage=usage, delay_s=delay_s, finish_reason=finish_reason)


def error(status: int, message: str = "scripted error", *, retry_after: float | str | None = None) -> Step:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    body = json.dumps({"error": {"message": message, "type": "fake_error", "code": status}})
    return Step(status=status, headers=headers, body=body)


def delay(seconds: float, content: str = "too late") -> Step:
    return Step(content=content, delay_s=seconds)


def raw(body: str, status: int = 200) -> Step:
    """A response body that is not a proper completion (a proxy's error page, half a JSON...)."""
    return Step(status=status, body=body)


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]
    at: float

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def last_user(self) -> str:
        users = [m.get("content") or "" for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


class FakeOpenAI:
    def __init__(self, script: list[Step] | None = None, *, scripts: dict[str, list[Step]] | None = None,
                 responder: Callable[[Request], Step | None] | None = None):
        self.script = list(script or [])
        self.scripts = {model: list(steps) for model, steps in (scripts or {}).items()}
        self.responder = responder
        self.requests: list[Request] = []
        self.unanswered = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control

    def add(self, *steps: Step, model: str | None = None) -> None:
        with self._lock:
            (self.scripts.setdefault(model, []) if model else self.script).extend(steps)

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a delay step
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def remaining(self) -> int:
        return len(self.script) + sum(len(s) for s in self.scripts.values())

    # -- serving

    def _next(self, request: Request) -> Step | None:
        if self.responder is not None:
            step = self.responder(request)
            if step is not None:
                return step
        with self._lock:
            steps = self.scripts.get(request.model or "")
            if steps:
                return steps.pop(0)
            if self.script:
                return self.script.pop(0)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    server_fake: FakeOpenAI

    def log_message(self, *args) -> None:  # quiet: tests read fake.requests instead
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            models = sorted(set(self.server_fake.scripts) | {"fake-model"})
            self._send(200, json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}))
        else:
            self._send(404, json.dumps({"error": {"message": "not found"}}))

    def do_POST(self) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw_body or b"{}")
        except ValueError:
            body = {"_unparsed": raw_body.decode(errors="replace")}
        request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
        with fake._lock:
            fake.requests.append(request)
            n = len(fake.requests)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        step = fake._next(request)
        if step is None:
            with fake._lock:
                fake.unanswered += 1
            self._send(400, json.dumps({"error": {"message": "fake_openai: script exhausted", "type": "fake"}}))
            return
        if step.delay_s and fake._stopping.wait(step.delay_s):
            return
        if step.body is not None:
            self._send(step.status, step.body, step.headers)
            return
        self._send(step.status, json.dumps(_completion(n, request, step)), step.headers)

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass


def _completion(n: int, request: Request, step: Step) -> dict:
    out: dict[str, Any] = {
        "id": f"chatcmpl-fake-{n}", "object": "chat.completion", "created": int(time.time()),
        "model": request.model or "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": step.content},
                     "finish_reason": step.finish_reason}],
    }
    if step.usage is True:
        prompt = sum(len(str(m.get("content") or "")) for m in request.messages) // 4 + 1
        completion = len(step.content) // 4 + 1
        out["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    elif isinstance(step.usage, dict):
        out["usage"] = step.usage
    return out
