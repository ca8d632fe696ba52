"""Strict parsing of a provider's reply into a :class:`~mlengine.llm.schema.Decision`.

A reply is untrusted text. :func:`parse_reply` accepts exactly one JSON object of the
decision schema — alone, inside a ```` ``` ```` / ```` ```json ```` fence, or with prose
around it — and rejects everything else with a :class:`ReplyError` whose message says what
is wrong (which field, which value) without echoing more than a short snippet of the reply.

How the object is found: the reply (fences removed) is first decoded whole; if it is JSON
but not an object (an array, a string, a number) it is rejected. Otherwise every ``{`` or
``[`` is tried as the start of a JSON value with :meth:`json.JSONDecoder.raw_decode`; a
value that decodes is skipped whole (so a JSON object inside a string or inside an array is
never a candidate) and the scan resumes after it. The distinct objects found must be
exactly one; several different objects are ambiguous and rejected, copies of one object
count once. Arrays beside the object (``[1]`` in prose) are ignored; a reply whose only
JSON is arrays is rejected.

Decisions made here, stricter than plain ``json`` and pydantic's lax mode:

* ``NaN``, ``Infinity``, ``-Infinity``, a float that overflows to infinity, an integer
  literal of more than :data:`MAX_INT_DIGITS` digits and a duplicate key anywhere in a JSON
  value of the reply reject the whole reply (``json.loads`` would accept the first three
  and keep the last duplicate silently).
* The object is validated in pydantic's strict mode: a number given as a string
  (``"0.7"``), a boolean where a number is expected (``true`` is an ``int`` in Python) and
  a float ``horizon``, even an integral one (``4.0``), are rejected; ``action`` must be exactly
  ``"BUY"``, ``"SELL"`` or ``"HOLD"`` (``"buy"`` is rejected, not normalised). Unknown
  fields are rejected (the model forbids extras).
* ``reasoning`` may hold ``\\n`` and ``\\t`` but no other control character and no
  bidirectional override (text that reads differently from what it holds); a lone
  surrogate (``"\\ud800"``, not writable as UTF-8) is refused by pydantic as not a
  string. It is kept verbatim and never interpreted: an instruction inside it changes no
  field.
* The JSON schema itself (a reply that echoes the prompt) is recognised and rejected.
* A JSON value still open at the end of the reply is reported as truncated, even when
  another object before it decoded.
* A reply longer than :data:`MAX_REPLY_CHARS` is rejected before any parsing; nesting
  deeper than the interpreter's recursion limit is rejected, not crashed on.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import Any

from pydantic import ValidationError

from mlengine.llm.schema import Decision, LLMError

__all__ = ["MAX_INT_DIGITS", "MAX_REPLY_CHARS", "ReplyError", "parse_reply"]

#: A longer reply is rejected before any parsing (a decision needs well under 2,000).
MAX_REPLY_CHARS = 20_000
#: Digits (sign excluded) of the longest integer literal accepted in a reply.
MAX_INT_DIGITS = 30

_SNIPPET = 40
_MAX_LISTED_ERRORS = 5
_SCHEMA_KEYS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "definitions",
        "title",
        "description",
        "type",
        "properties",
        "required",
        "additionalProperties",
    }
)
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_LITERAL_PREFIXES = ("true", "false", "null")
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n?(?P<body>.*?)\n?[ \t]*```\s*\Z", re.DOTALL)
_OPENERS = re.compile(r"[{\[]")
_NUMBER_TAIL = re.compile(r"-?[0-9.eE+-]*")


class ReplyError(LLMError):
    """A reply that is not exactly one valid decision; the message says why."""


class _Refused(Exception):
    """Raised inside the JSON decoder for a value the reply may not contain."""


def _snippet(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number a decision may hold")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {_snippet(key)} in a JSON object")
        out[key] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_constant=_refuse_constant,
)
_INT_LIMIT = 10**MAX_INT_DIGITS


def _check_numbers(value: Any, start: int) -> None:
    """Reject a float that overflowed to infinity or an over-long integer in ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ReplyError(
                f"reply rejected: a number overflows a float (JSON starting at char {start})"
            )
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _INT_LIMIT:
            raise ReplyError(
                f"reply rejected: integer literal of more than {MAX_INT_DIGITS} digits "
                f"(JSON starting at char {start})"
            )


def _decode(text: str, start: int) -> tuple[Any, int]:
    """Decode the JSON value at ``start``; hostile content raises :class:`ReplyError`."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer literal past the interpreter's digit limit
        raise ReplyError(
            f"reply rejected: integer literal too long to convert (JSON starting at char {start})"
        ) from None
    except _Refused as err:
        raise ReplyError(f"reply rejected: {err} (JSON starting at char {start})") from None
    except RecursionError:
        raise ReplyError(
            f"reply rejected: JSON nested too deeply (value starting at char {start})"
        ) from None
    _check_numbers(value, start)
    return value, end


def _is_truncated(text: str, err: json.JSONDecodeError) -> bool:
    """Whether decoding failed because the text ended inside the value."""
    if err.msg.startswith("Unterminated string"):
        return True
    rest = text[err.pos :].rstrip()
    if not rest:
        return True
    if any(word.startswith(rest) for word in _LITERAL_PREFIXES):
        return True
    return _NUMBER_TAIL.fullmatch(rest) is not None


def _type_name(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _whole(text: str) -> tuple[int, dict[str, Any]] | None:
    """The reply decoded whole (a fence around it removed): its start and object, or None
    if it is not one JSON value. A JSON value that is not an object, or that is truncated, is
    rejected."""
    match = _FENCE.match(text)
    first, last = match.span("body") if match else (0, len(text))
    while first < last and text[first].isspace():
        first += 1
    while last > first and text[last - 1].isspace():
        last -= 1
    if first == last:
        return None
    body = text[:last]
    try:
        value, end = _decode(body, first)
    except json.JSONDecodeError as err:
        if body[first] in "{[" and _is_truncated(body, err):
            raise _truncated(first, err) from None
        return None
    if end != last:
        return None
    if not isinstance(value, dict):
        raise ReplyError(
            f"reply is a JSON {_type_name(value)}, not an object: a decision must be one "
            "JSON object"
        )
    return first, value


def _describe(err: json.JSONDecodeError) -> str:
    return f"{err.msg.removesuffix(' starting at').removesuffix(' at')} at char {err.pos}"


def _truncated(start: int, err: json.JSONDecodeError) -> ReplyError:
    return ReplyError(
        f"truncated JSON: the value starting at char {start} is never closed ({_describe(err)})"
    )


def _candidates(text: str) -> list[tuple[int, dict[str, Any]]]:
    """The top-level JSON objects in ``text`` with their start, in order."""
    objects: list[tuple[int, dict[str, Any]]] = []
    arrays = 0
    first_error: str | None = None
    position = 0
    while (found := _OPENERS.search(text, position)) is not None:
        start = found.start()
        try:
            value, end = _decode(text, start)
        except json.JSONDecodeError as err:
            if _is_truncated(text, err):
                raise _truncated(start, err) from None
            if first_error is None and text[start] == "{":
                first_error = f"invalid JSON ({_describe(err)})"
            position = start + 1
            continue
        if isinstance(value, dict):
            objects.append((start, value))
        else:
            arrays += 1
        position = end
    if not objects:
        if arrays:
            raise ReplyError(
                "reply holds a JSON array, not an object: a decision must be one JSON object"
            )
        if first_error is not None:
            raise ReplyError(f"no decision in the reply: {first_error}")
        raise ReplyError("no JSON object in the reply")
    return objects


def _is_schema(value: dict[str, Any]) -> bool:
    return "properties" in value and set(value) <= _SCHEMA_KEYS


def _validation_message(err: ValidationError) -> str:
    problems: list[str] = []
    missing: list[str] = []
    for item in err.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "object"
        if len(field) > _SNIPPET:  # an unknown key is reply text
            field = field[: _SNIPPET - 3] + "..."
        if item["type"] == "missing":
            missing.append(field)
        elif item["type"] == "value_error":  # the message names the value
            problems.append(f"{field}: {item['msg'].removeprefix('Value error, ')}")
        else:
            problems.append(f"{field}: {item['msg']} (got {_snippet(item['input'])})")
    if len(problems) > _MAX_LISTED_ERRORS:
        more = len(problems) - _MAX_LISTED_ERRORS
        problems = [*problems[:_MAX_LISTED_ERRORS], f"and {more} more"]
    if missing:
        problems.append(f"missing field(s): {', '.join(missing)}")
    return "reply is not a valid decision: " + "; ".join(problems)


def _check_reasoning(reasoning: str) -> None:
    for index, char in enumerate(reasoning):
        if char in "\n\t":
            continue
        if unicodedata.category(char) == "Cc" or char in _BIDI:
            kind = "bidirectional control" if char in _BIDI else "control character"
            raise ReplyError(
                f"reply is not a valid decision: reasoning: {kind} U+{ord(char):04X} at "
                f"char {index} (only \\n and \\t are allowed)"
            )


def parse_reply(text: str) -> Decision:
    """The one decision in ``text``; :class:`ReplyError` (saying why) for anything else."""
    if not isinstance(text, str):
        raise ReplyError(f"reply must be a str, got {type(text).__name__}")
    if len(text) > MAX_REPLY_CHARS:
        raise ReplyError(f"reply of {len(text)} chars is longer than {MAX_REPLY_CHARS}")
    if not text.strip():
        raise ReplyError("reply is empty")
    whole = _whole(text)
    found = [whole] if whole is not None else _candidates(text)
    for start, value in found:
        if _is_schema(value):
            raise ReplyError(
                f"reply echoes the JSON schema (object at char {start}) instead of a decision"
            )
    try:
        distinct = {json.dumps(value, sort_keys=True) for _, value in found}
    except RecursionError:
        raise ReplyError("reply rejected: JSON nested too deeply") from None
    if len(distinct) > 1:
        starts = ", ".join(str(start) for start, _ in found[:_MAX_LISTED_ERRORS])
        raise ReplyError(
            f"ambiguous reply: {len(distinct)} different JSON objects (at chars {starts}); "
            "expected exactly one decision"
        )
    try:
        decision = Decision.model_validate(found[0][1], strict=True)
    except ValidationError as err:
        raise ReplyError(_validation_message(err)) from None
    _check_reasoning(decision.reasoning)
    return decision
