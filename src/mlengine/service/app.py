"""The signal service: a FastAPI app over the store, the saved live ensembles and the runs.

Routes (OpenAPI at ``/openapi.json``, docs at ``/docs``):

* ``GET /health`` — no key needed;
* ``GET /assets`` — the stored series, and whether each has a saved live ensemble;
* ``GET /signals/{symbol}?timeframe=`` — the latest decision logged in ``ml.llm_signals``
  for the series, with the ensemble probability stored in ``ml.predictions`` for its bar
  (the live prediction it was made with, else the newest run's);
* ``POST /predict`` — the newest bars in (one is enough: the service adds the history the
  ensemble needs from the bars earlier requests sent and from the store,
  :mod:`mlengine.service.history`); each strategy's probability, the gate's weights, the
  calibrated ensemble probability, and a decision of the provider chain
  (:class:`mlengine.llm.decision.DecisionMaker`); with ``log_signals`` the decision goes to
  ``ml.llm_signals`` and the predictions to ``ml.predictions`` (run id :data:`LIVE_RUN`),
  in batches by a background thread (:mod:`mlengine.service.writer`).
  The live ensemble of the series (:func:`mlengine.ensemble.live.live_dir`) is loaded once
  and kept;
* ``GET /runs/{run_id}`` — a stored run's config, metrics and verdict.

Errors are JSON ``{"error": ..., "detail": ...}``: 401 without a valid key, 404 for what does
not exist, 422 for input the engine cannot use (naming the field), 503 when the store is
unreachable, 500 for anything else — whose traceback is logged here and never sent.

With ``api_keys`` set (``MLENGINE_API_KEYS``, comma-separated), every route but ``/health``
needs the header ``X-API-Key``; it is compared with every configured key by
:func:`hmac.compare_digest`, so the time taken does not tell how much of a key matched.
"""

from __future__ import annotations

import gc
import hmac
import logging
import re
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlengine import __version__
from mlengine.data.schema import MLEngineError, make_bar_frame
from mlengine.data.store import Store, StoreUnavailableError
from mlengine.ensemble.live import (
    LiveEnsemble,
    LiveEnsembleError,
    LiveEnsembleNotFoundError,
    LivePrediction,
    live_dir,
)
from mlengine.service.history import MAX_GAP, BarHistory, HistoryError
from mlengine.service.schemas import (
    Asset,
    AssetsResponse,
    DecisionOut,
    ErrorResponse,
    HealthResponse,
    PredictRequest,
    PredictResponse,
    RunResponse,
    SignalResponse,
    StepOut,
    StrategyPrediction,
    finite,
)
from mlengine.service.writer import SignalWriter

__all__ = ["API_KEY_HEADER", "LIVE_RUN", "ServiceError", "ServiceSettings", "create_app"]

log = logging.getLogger("mlengine.service")

API_KEY_HEADER = "X-API-Key"
#: Run id of the live predictions the service stores in ``ml.predictions``.
LIVE_RUN = "live"
_KEY_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="an API key")
_MICROSECOND = timedelta(microseconds=1)
#: Bars the decision context reads: its Wilder ATR(14), seeded at the first bar given, is then
#: the full history's to double precision ((13/14)^500 < 1e-16), and the recent bars it
#: shows are far fewer.
_CONTEXT_BARS = 512
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ServiceError(MLEngineError):
    """An error with its HTTP status, kind and message for the client."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class ServiceSettings(BaseModel):
    """Where the service reads and writes: the store (``None``: ``MLENGINE_DB_URL`` or the
    DuckDB file under the data dir), the live models and run directories (``None``: under
    the data dir), the API keys (empty: no auth), whether ``POST /predict`` logs, and the
    longest gap allowed before a request's bars (:class:`BarHistory`)."""

    model_config = ConfigDict(frozen=True)

    db_url: str | None = None
    models_dir: Path | None = None
    runs_dir: Path | None = None
    api_keys: tuple[str, ...] = ()
    log_signals: bool = True
    #: the longest time between the history the service has and the first bar of a request
    max_gap: timedelta = MAX_GAP.to_pytimedelta()

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        """Settings with the API keys of ``MLENGINE_API_KEYS`` (comma-separated)."""
        import os

        keys = tuple(k.strip() for k in os.environ.get("MLENGINE_API_KEYS", "").split(","))
        return cls(**{"api_keys": tuple(k for k in keys if k), **overrides})


class _State:
    """What the app keeps between requests: the store (opened on first use), the loaded
    live ensembles, the recent bars of each series and the decision makers (one per
    provider chain, so that their circuit breakers remember failures)."""

    def __init__(self, settings: ServiceSettings) -> None:
        from mlengine.pipeline import models_root

        self.settings = settings
        self.models = models_root(settings.models_dir)
        self._store: Store | None = None
        self._ensembles: dict[tuple[str, str], LiveEnsemble] = {}
        self._makers: dict[str, Any] = {}
        self.history = BarHistory(self.store, max_gap=pd.Timedelta(settings.max_gap))
        self.writer = SignalWriter(self.store)
        self._lock = threading.Lock()  # the store and the decision makers
        self._loading = threading.Lock()  # loading a live ensemble takes a while: its own

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                from mlengine.data.store import open_store

                self._store = open_store(self.settings.db_url)
            return self._store

    def ensemble(self, symbol: str, timeframe: str) -> LiveEnsemble:
        key = (symbol, timeframe)
        with self._loading:
            found = self._ensembles.get(key)
            if found is None:
                path = live_dir(self.models, symbol, timeframe)
                try:
                    found = LiveEnsemble.load(path)
                except LiveEnsembleNotFoundError:
                    raise ServiceError(
                        404,
                        "no live ensemble",
                        f"no live ensemble for {symbol} {timeframe}: the directory {path} does "
                        "not exist (fit one with fit_live)",
                    ) from None
                except LiveEnsembleError as err:
                    raise ServiceError(500, "broken live ensemble", str(err)) from None
                self._ensembles[key] = found
                # the models live as long as the process: move them (and everything else
                # alive now) out of the cyclic collector's reach, so that its full passes,
                # triggered by the objects each request makes, stop walking them (a full
                # pass over the loaded models took hundreds of ms: the p99 halved)
                gc.collect()
                gc.freeze()
            return found

    def maker(self, chain: str) -> Any:
        from mlengine.llm.decision import DecisionMaker, make_chain

        with self._lock:
            if chain not in self._makers:
                self._makers[chain] = DecisionMaker(make_chain(chain))
            return self._makers[chain]

    @property
    def loaded(self) -> int:
        return len(self._ensembles)

    def close(self) -> None:
        self.writer.close()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _error(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "request"


def _validation_detail(err: RequestValidationError) -> str:
    lines = []
    for e in err.errors():
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_field(tuple(e.get('loc', ())))}: {message}")
    return "; ".join(lines[:20]) + (f"; and {len(lines) - 20} more" if len(lines) > 20 else "")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (401, "missing or wrong API key"),
        (404, "not found"),
        (422, "invalid input (the detail names the field)"),
        (500, "internal error (logged on the server)"),
        (503, "the store is unreachable"),
    )
}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: _ERRORS[code] for code in codes}


def _decision(record: Any) -> DecisionOut:
    d = record.decision
    return DecisionOut(
        action=d.action if d is not None else "NONE",
        valid=record.valid,
        provider=record.provider,
        confidence=d.confidence if d is not None else None,
        entry=d.entry if d is not None else None,
        stop_loss=d.stop_loss if d is not None else None,
        take_profit=d.take_profit if d is not None else None,
        horizon=d.horizon if d is not None else None,
        reasoning=d.reasoning if d is not None else None,
        fallback_used=record.fallback_used,
        chain=[StepOut(**s.to_dict()) for s in record.chain],
        validation_errors=list(record.validation_errors),
    )


def _prediction_rows(pred: LivePrediction) -> pd.DataFrame:
    """The live prediction as rows of ``ml.predictions``: each strategy and the ensemble."""
    outputs = {name: (o.p_up, o.diagnostics) for name, o in pred.strategies.items()}
    weights = {f"w.{k}": v for k, v in pred.weights.items()}
    outputs["ensemble"] = (pred.p_up, {"p_raw": pred.p_raw, **weights})
    return pd.DataFrame(
        {
            "run_id": LIVE_RUN,
            "strategy": list(outputs),
            "symbol": pred.symbol,
            "timeframe": pred.timeframe,
            "ts": [pred.ts] * len(outputs),
            "fold": np.zeros(len(outputs), dtype=np.int64),
            "p_up": [p for p, _ in outputs.values()],
            "diagnostics": [finite(dict(d)) for _, d in outputs.values()],
        }
    )


def _ensemble_probability(
    store: Store, symbol: str, timeframe: str, ts: pd.Timestamp
) -> tuple[float | None, str | None]:
    """The stored ensemble ``p_up`` at ``ts``: the live one, else the newest run's."""
    where = {"symbol": symbol, "timeframe": timeframe, "strategy": "ensemble", "ts": ts}
    rows = store.read_table("ml.predictions", where)
    if rows.empty:
        return None, None
    live = rows[rows["run_id"] == LIVE_RUN]
    chosen = live if not live.empty else rows.sort_values("created_at", kind="stable")
    row = chosen.iloc[-1]
    return float(row["p_up"]), str(row["run_id"])


def _time(value: Any) -> datetime | None:
    """A stored time as an aware ``datetime`` (UTC), ``None`` when missing."""
    if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
        return None
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _optional(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The signal service app (module docstring); ``settings`` default to the environment
    (:meth:`ServiceSettings.from_env`)."""
    state = _State(settings if settings is not None else ServiceSettings.from_env())
    keys = tuple(k.encode() for k in state.settings.api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        title="mlengine signal service",
        version=__version__,
        description="Calibrated ensemble signals and decisions from the live models.",
        lifespan=lifespan,
    )
    app.state.service = state

    def require_key(key: Annotated[str | None, Security(_KEY_HEADER)]) -> None:
        if not keys:
            return
        if not key:
            raise ServiceError(401, "unauthorized", f"missing {API_KEY_HEADER} header")
        given = key.encode()
        # every configured key is compared (no early exit), each in constant time
        matched = [hmac.compare_digest(given, k) for k in keys]
        if not any(matched):
            raise ServiceError(401, "unauthorized", f"the {API_KEY_HEADER} is not valid")

    secured = [Depends(require_key)]

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid input", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not found", 405: "method not allowed"}.get(exc.status_code, "http error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return JSONResponse(
            {"error": kind, "detail": detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(StoreUnavailableError)
    async def _store_down(request: Request, exc: StoreUnavailableError) -> JSONResponse:
        return _error(503, "store unavailable", str(exc))

    @app.exception_handler(MLEngineError)
    async def _engine(request: Request, exc: MLEngineError) -> JSONResponse:
        status = 422 if isinstance(exc, ValueError | LookupError) else 500
        if status == 500:
            log.error("engine error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(status, "cannot process" if status == 422 else "internal error", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error", "an unexpected error occurred; it is logged")

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    def health() -> HealthResponse:
        """Liveness: no key needed, touches neither the store nor the models."""
        return HealthResponse(status="ok", version=__version__, loaded=state.loaded)

    @app.get(
        "/assets",
        response_model=AssetsResponse,
        dependencies=secured,
        responses=_responses(401, 500, 503),
        tags=["data"],
    )
    def assets() -> AssetsResponse:
        """The stored series (symbol, timeframe, bar count and range) and whether each has
        a saved live ensemble."""
        series = state.store().list_series()
        out = []
        for rec in series.to_dict(orient="records"):
            symbol, timeframe = str(rec["symbol"]), str(rec["timeframe"])
            try:
                path: Path | None = live_dir(state.models, symbol, timeframe)
            except LiveEnsembleError:  # a stored symbol that cannot name a directory
                path = None
            out.append(
                Asset(
                    symbol=symbol,
                    timeframe=timeframe,
                    rows=int(rec["rows"]),
                    first_ts=_time(rec["first_ts"]),
                    last_ts=_time(rec["last_ts"]),
                    live_ensemble=path is not None and (path / "manifest.json").is_file(),
                )
            )
        return AssetsResponse(assets=out)

    @app.get(
        "/signals/{symbol}",
        response_model=SignalResponse,
        dependencies=secured,
        responses=_responses(401, 404, 422, 500, 503),
        tags=["signals"],
    )
    def signal(
        symbol: Annotated[str, PathParam(min_length=1, max_length=64)],
        timeframe: Annotated[
            str | None, Query(max_length=16, description="e.g. 1h; default: any")
        ] = None,
    ) -> SignalResponse:
        """The latest decision logged for ``symbol`` (and ``timeframe``), with the ensemble
        probability stored for its bar."""
        from mlengine.llm.signal_log import read_decisions

        state.writer.flush()  # the decisions of earlier requests are readable
        store = state.store()
        rows = read_decisions(store, symbol=symbol, timeframe=timeframe)
        if rows.empty:
            which = f"{symbol} {timeframe}" if timeframe else symbol
            raise ServiceError(404, "no signal", f"no decision logged for {which}")
        last = rows.sort_values(["ts", "id"], kind="stable").iloc[-1]
        ts = pd.Timestamp(last["ts"])
        p_up, run = _ensemble_probability(store, str(last["symbol"]), str(last["timeframe"]), ts)
        created = last.get("created_at")
        return SignalResponse(
            symbol=str(last["symbol"]),
            timeframe=str(last["timeframe"]),
            ts=ts.to_pydatetime(),
            action=str(last["action"]),
            valid=bool(last["valid"]),
            provider=str(last["provider"]),
            confidence=_optional(last["confidence"]),
            entry=_optional(last["entry"]),
            stop_loss=_optional(last["stop_loss"]),
            take_profit=_optional(last["take_profit"]),
            horizon=None if _optional(last["horizon"]) is None else int(last["horizon"]),
            reasoning=_optional(last["reasoning"]),
            fallback_used=bool(last["fallback_used"]),
            created_at=_time(created),
            ensemble_p_up=p_up,
            ensemble_run=run,
        )

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=secured,
        responses=_responses(401, 404, 422, 500, 503),
        tags=["signals"],
    )
    def predict(body: PredictRequest) -> PredictResponse:
        """The live ensemble's prediction at the last of ``bars`` and a decision on it; the
        history before the given bars comes from earlier requests and the store."""
        from mlengine.llm.formatter import build_context

        live = state.ensemble(body.symbol, body.timeframe)
        try:
            completed = state.history.complete(_frame(body), live.min_bars)
        except HistoryError as err:
            raise ServiceError(422, "invalid input", str(err)) from None
        bars = completed.bars
        pred = live.predict(bars)
        context = build_context(
            bars.iloc[-_CONTEXT_BARS:],
            strategies=pred.strategy_frames(),
            ensemble=pred.ensemble_frame(),
        )
        record = state.maker(body.providers).decide(context)
        if state.settings.log_signals:  # written by the writer's thread: no wait here
            state.writer.put(record.to_log(), _prediction_rows(pred))
        return PredictResponse(
            symbol=pred.symbol,
            timeframe=pred.timeframe,
            ts=pred.ts.to_pydatetime(),
            strategies={
                name: StrategyPrediction(p_up=o.p_up, diagnostics=o.diagnostics)
                for name, o in pred.strategies.items()
            },
            weights=pred.weights,
            p_raw=pred.p_raw,
            p_up=pred.p_up,
            decision=_decision(record),
            history_added=completed.added,
            logged=state.settings.log_signals,
        )

    @app.get(
        "/runs/{run_id}",
        response_model=RunResponse,
        dependencies=secured,
        responses=_responses(401, 404, 422, 500),
        tags=["runs"],
    )
    def run(run_id: str) -> RunResponse:
        """A stored run's configuration, metrics and verdict."""
        from mlengine.backtest.runs import RunNotFoundError, load_run

        if not _RUN_ID.match(run_id) or ".." in run_id:
            raise ServiceError(
                422, "invalid input", f"run_id: {run_id!r} is not a run id (letters, digits, _.-)"
            )
        try:
            record = load_run(run_id, root=state.settings.runs_dir)
        except RunNotFoundError:
            raise ServiceError(404, "no run", f"no stored run {run_id!r}") from None
        name = record.manifest.get("name")
        return RunResponse(
            run_id=record.run_id,
            name=None if name is None else str(name),
            config=finite(record.config),
            metrics=finite(record.metrics),
            verdict=finite(record.verdict),
        )

    return app


def _frame(body: PredictRequest) -> pd.DataFrame:
    """The request's bars as a bar frame (index ``ts``, UTC, float64 OHLCV). The times go
    through integer microseconds: a DatetimeIndex of thousands of datetime objects takes
    longer to build than the rest of the frame."""
    bars, n = body.bars, len(body.bars)
    columns: Mapping[str, object] = {
        c: np.fromiter((getattr(b, c) for b in bars), dtype=np.float64, count=n)
        for c in ("open", "high", "low", "close", "volume")
    }
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micros = np.fromiter(((b.ts - epoch) // _MICROSECOND for b in bars), dtype=np.int64, count=n)
    index = pd.DatetimeIndex(micros.astype("datetime64[us]")).tz_localize("UTC")
    return make_bar_frame(index, columns, symbol=body.symbol, timeframe=body.timeframe)
