"""The signal log: every decision, valid or not, as one row of ``ml.llm_signals``.

:func:`log_decision` checks a record before it is written — required keys, types, finite
numbers, a valid record carrying a complete BUY / SELL / HOLD decision — and caps the free
text (``raw_reply`` at :data:`RAW_REPLY_CAP` characters with a marker saying how long it
was, ``reasoning`` at :data:`~mlengine.llm.schema.MAX_REASONING`, ``error``, each validation
error and each fallback reason at :data:`TEXT_CAP`). A key named like a secret
(``api_key``, ``secret``, ``password``, ...) is refused, and the values of secret-named
environment variables (``*API_KEY*``, ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``) are masked
in every text written, should a provider have echoed one.

``validation_errors`` lists every schema or risk check failed on the way, so a valid
record may carry some (an earlier provider's reply failed); ``fallback_chain`` lists one
``{provider, outcome, reason[, attempts]}`` step per provider asked.

:func:`read_decisions` reads the log back for replay: filtered by series and time, ordered
by ``ts`` then ``id``, the JSON columns as Python lists (``[]`` for rows written before
those columns existed).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlengine.data.schema import BarDataError, Timeframe, TimeframeError, check_symbol
from mlengine.data.store import Store
from mlengine.llm.schema import MAX_REASONING, LLMError

__all__ = [
    "COLUMNS",
    "RAW_REPLY_CAP",
    "TABLE",
    "TEXT_CAP",
    "SignalLogError",
    "log_decision",
    "log_decisions",
    "read_decisions",
]

TABLE = "ml.llm_signals"
#: Characters of a raw reply kept in the log (a longer one is cut, with a marker).
RAW_REPLY_CAP = 4000
#: Characters kept of ``error``, each validation error and each fallback reason.
TEXT_CAP = 1000
_MAX_LIST = 100
_ACTIONS = ("BUY", "SELL", "HOLD")
_SECRET_KEY = re.compile(r"api[_-]?key|secret|passw|authori[sz]ation|credential|bearer", re.I)
_SECRET_ENV = re.compile(r"API_?KEY|SECRET|TOKEN|PASSWORD|PASSWD", re.I)
_MASK = "[redacted]"

_REQUIRED = ("symbol", "timeframe", "ts", "action", "provider", "valid")
_FLOATS = ("confidence", "entry", "stop_loss", "take_profit", "latency_ms")
_INTS = ("horizon", "prompt_tokens", "completion_tokens")
_TEXTS = ("model", "prompt_hash", "prompt_version", "reasoning", "raw_reply", "error")
_DECISION = ("confidence", "entry", "stop_loss", "take_profit", "horizon")
_CHAIN_KEYS = ("provider", "outcome", "reason", "attempts")

#: The columns a record may set (``id`` and ``created_at`` are filled by the store).
COLUMNS: tuple[str, ...] = (
    *_REQUIRED,
    *_FLOATS,
    *_INTS,
    *_TEXTS,
    "fallback_used",
    "validation_errors",
    "fallback_chain",
)


class SignalLogError(LLMError, ValueError):
    """A record that cannot go into the signal log; nothing was written."""


def _secrets() -> list[str]:
    """Values of secret-named environment variables long enough to be worth masking."""
    return sorted(
        (v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8),
        key=len,
        reverse=True,
    )


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _MASK)
    return text


def _cap(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    marker = f" ...[{len(text)} chars, cut]"
    return text[: cap - len(marker)] + marker


def _text(record: Mapping[str, Any], key: str, cap: int | None, secrets: list[str]) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SignalLogError(f"{TABLE}: {key} must be text or None, got {type(value).__name__}")
    value = _mask(value, secrets)
    return value if cap is None else _cap(value, cap)


def _float(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise SignalLogError(f"{TABLE}: {key} must be a number or None, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise SignalLogError(f"{TABLE}: {key} must be finite, got {value!r}")
    return float(value)


def _int(record: Mapping[str, Any], key: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise SignalLogError(f"{TABLE}: {key} must be an integer or None, got {value!r}")
    if not 0 <= value <= 2**31 - 1:
        raise SignalLogError(f"{TABLE}: {key} must be in [0, 2^31 - 1], got {value}")
    return int(value)


def _bool(record: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    value = record.get(key, default)
    if isinstance(value, np.bool_):
        value = bool(value)
    if not isinstance(value, bool):
        raise SignalLogError(f"{TABLE}: {key} must be True or False, got {value!r}")
    return value


def _validation_errors(value: object, secrets: list[str]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise SignalLogError(f"{TABLE}: validation_errors must be a list of strings")
    if len(value) > _MAX_LIST:
        raise SignalLogError(f"{TABLE}: validation_errors has {len(value)} items (max {_MAX_LIST})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SignalLogError(f"{TABLE}: validation_errors[{i}] is not a string: {item!r}")
        out.append(_cap(_mask(item, secrets), TEXT_CAP))
    return out


def _fallback_chain(value: object, secrets: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise SignalLogError(f"{TABLE}: fallback_chain must be a list of steps {_CHAIN_KEYS}")
    if len(value) > _MAX_LIST:
        raise SignalLogError(f"{TABLE}: fallback_chain has {len(value)} steps (max {_MAX_LIST})")
    out: list[dict[str, Any]] = []
    for i, step in enumerate(value):
        if not isinstance(step, Mapping):
            raise SignalLogError(
                f"{TABLE}: fallback_chain[{i}] must be a mapping, got {type(step).__name__}"
            )
        keys = set(map(str, step))
        if not {"provider", "outcome"} <= keys <= set(_CHAIN_KEYS):
            raise SignalLogError(
                f"{TABLE}: fallback_chain[{i}] has keys {sorted(keys)}; needs provider and "
                f"outcome, may have {sorted(set(_CHAIN_KEYS) - {'provider', 'outcome'})}"
            )
        for key in ("provider", "outcome"):
            if not isinstance(step[key], str) or not step[key]:
                raise SignalLogError(f"{TABLE}: fallback_chain[{i}].{key} must be non-empty text")
        reason = step.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise SignalLogError(f"{TABLE}: fallback_chain[{i}].reason must be text or None")
        attempts = step.get("attempts")
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0
        ):
            raise SignalLogError(
                f"{TABLE}: fallback_chain[{i}].attempts must be an integer >= 0, got {attempts!r}"
            )
        entry: dict[str, Any] = {
            "provider": step["provider"],
            "outcome": step["outcome"],
            "reason": None if reason is None else _cap(_mask(reason, secrets), TEXT_CAP),
        }
        if "attempts" in step:
            entry["attempts"] = attempts
        out.append(entry)
    return out


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, capped row of ``record`` (every column of :data:`COLUMNS`)."""
    if not isinstance(record, Mapping):
        raise SignalLogError(f"{TABLE}: a record is a mapping, got {type(record).__name__}")
    for key in record:
        if not isinstance(key, str):
            raise SignalLogError(f"{TABLE}: record keys are text, got {key!r}")
        if _SECRET_KEY.search(key):
            raise SignalLogError(f"{TABLE}: refusing key {key!r}: secrets are never logged")
    unknown = sorted(set(record) - set(COLUMNS))
    if unknown:
        raise SignalLogError(f"{TABLE}: unknown keys {unknown}; allowed: {sorted(COLUMNS)}")
    missing = [k for k in _REQUIRED if record.get(k) is None]
    if missing:
        raise SignalLogError(f"{TABLE}: required keys missing: {missing}")
    secrets = _secrets()
    try:
        symbol = check_symbol(record["symbol"])
        timeframe = Timeframe.parse(record["timeframe"]).name
    except (BarDataError, TimeframeError, TypeError) as err:
        raise SignalLogError(f"{TABLE}: {err}") from err
    try:
        ts = pd.Timestamp(record["ts"])
    except (TypeError, ValueError) as err:
        raise SignalLogError(f"{TABLE}: ts {record['ts']!r} is not a time: {err}") from None
    if ts is pd.NaT:
        raise SignalLogError(f"{TABLE}: ts is NaT")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    action = record["action"]
    if not isinstance(action, str) or not 1 <= len(action) <= 16 or not action.isprintable():
        raise SignalLogError(f"{TABLE}: action must be 1-16 printable characters, got {action!r}")
    provider = record["provider"]
    if not isinstance(provider, str) or not provider:
        raise SignalLogError(f"{TABLE}: provider must be non-empty text, got {provider!r}")
    row: dict[str, Any] = {
        "symbol": symbol,
        "timeframe": timeframe,
        "ts": ts,
        "action": action,
        "provider": provider,
        "valid": _bool(record, "valid"),
        "fallback_used": _bool(record, "fallback_used", False),
    }
    row.update({k: _float(record, k) for k in _FLOATS})
    row.update({k: _int(record, k) for k in _INTS})
    caps: dict[str, int | None] = {"reasoning": MAX_REASONING, "raw_reply": RAW_REPLY_CAP}
    caps["error"] = TEXT_CAP
    row.update({k: _text(record, k, caps.get(k), secrets) for k in _TEXTS})
    row["validation_errors"] = _validation_errors(record.get("validation_errors"), secrets)
    row["fallback_chain"] = _fallback_chain(record.get("fallback_chain"), secrets)
    if row["valid"]:
        if action not in _ACTIONS:
            raise SignalLogError(
                f"{TABLE}: a valid record's action is one of {_ACTIONS}, got {action!r}"
            )
        absent = [k for k in _DECISION if row[k] is None]
        if absent:
            raise SignalLogError(f"{TABLE}: a valid record needs the decision fields {absent}")
    return row


def log_decision(store: Store, record: Mapping[str, Any]) -> None:
    """Check ``record`` and append it to ``ml.llm_signals``; on any error nothing is written.

    Required: ``symbol``, ``timeframe``, ``ts``, ``action``, ``provider``, ``valid``; the
    other keys of :data:`COLUMNS` are optional. Raises :class:`SignalLogError` naming the
    offending key.
    """
    log_decisions(store, [record])


def log_decisions(store: Store, records: Sequence[Mapping[str, Any]]) -> int:
    """Check every record as :func:`log_decision` does, then append them all to
    ``ml.llm_signals`` in one transaction (one bad record: nothing written); returns the
    number of rows written."""
    return store.insert_records(TABLE, [_row(record) for record in records])


def read_decisions(
    store: Store,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    start: object = None,
    end: object = None,
    valid_only: bool = False,
) -> pd.DataFrame:
    """Logged decisions with ``start <= ts < end`` (either end open), ordered by ts, id.

    Every column of ``ml.llm_signals``; numbers typed (floats, nullable ``Int64``
    integers, booleans), ``validation_errors`` and ``fallback_chain`` as Python lists.
    """
    where: dict[str, Any] = {}
    if symbol is not None:
        where["symbol"] = symbol
    if timeframe is not None:
        try:
            where["timeframe"] = Timeframe.parse(timeframe).name
        except TimeframeError as err:
            raise SignalLogError(f"{TABLE}: {err}") from err
    if valid_only:
        where["valid"] = True
    frame = store.read_table(TABLE, where)
    if start is not None:
        frame = frame[frame["ts"] >= _utc(start, "start")]
    if end is not None:
        frame = frame[frame["ts"] < _utc(end, "end")]
    frame = frame.sort_values(["ts", "id"], kind="stable").reset_index(drop=True)
    frame["id"] = frame["id"].astype("int64")
    for col in _FLOATS:
        frame[col] = pd.to_numeric(frame[col], errors="raise").astype("float64")
    for col in (*_INTS,):
        frame[col] = pd.array([None if _na(v) else int(v) for v in frame[col]], dtype="Int64")
    for col in ("valid", "fallback_used"):
        frame[col] = frame[col].astype(bool)
    for col in ("validation_errors", "fallback_chain"):
        frame[col] = pd.Series(
            [[] if v is None else v for v in frame[col]], index=frame.index, dtype=object
        )
    return frame


def _na(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _utc(value: object, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise SignalLogError(f"{TABLE}: {what} {value!r} is not a time: {err}") from None
    if ts is pd.NaT:
        raise SignalLogError(f"{TABLE}: {what} is NaT")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
