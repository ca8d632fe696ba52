"""The service's signal writer: the decisions and predictions of ``POST /predict`` go to the
store from one background thread, in batches.

A store write costs a transaction (tens of milliseconds on DuckDB), more than a prediction
takes once the models are loaded; done per request, even after the response, it would take
that time from the requests that follow. :class:`SignalWriter` queues each request's
decision and prediction rows (:meth:`~SignalWriter.put`, which returns at once); a daemon
thread collects them for up to ``linger`` seconds after the first (or :data:`BATCH` of them)
and writes them in two transactions — ``ml.llm_signals`` and ``ml.predictions`` — then
waits for more. :meth:`~SignalWriter.flush` writes at once and waits until all that was
queued is written (the service calls it before reading signals back, so a client reads its
own writes); :meth:`~SignalWriter.close` flushes and stops the thread (at shutdown).

A batch that fails is written again one request at a time, so that one bad record or a
transient error loses only what cannot be written; each failure is logged with the series
and bar. What is queued when the process dies without shutting down is lost: at most the
requests of the last ``linger`` seconds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlengine.data.store import Store

__all__ = ["SignalWriter"]

log = logging.getLogger("mlengine.service")

#: Most requests written in one batch.
BATCH = 256
#: Seconds a batch waits for more requests after its first.
LINGER = 0.5
#: Queue marks: write what is collected now; stop.
_FLUSH, _STOP = object(), object()


@dataclass(frozen=True)
class _Item:
    decision: dict[str, Any]
    predictions: pd.DataFrame


class SignalWriter:
    """Writes queued decisions and predictions to the store of ``store()`` (module docs)."""

    def __init__(self, store: Callable[[], Store], *, linger: float = LINGER) -> None:
        self._store = store
        self.linger = linger
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def put(self, decision: dict[str, Any], predictions: pd.DataFrame) -> None:
        """Queue one request's decision record and prediction rows."""
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="mlengine-signal-writer", daemon=True
                )
                self._thread.start()
        self._queue.put(_Item(decision, predictions))

    def flush(self) -> None:
        """Write what is queued now and wait until it is written (or has failed and been
        logged)."""
        if self._thread is not None:
            self._queue.put(_FLUSH)
        self._queue.join()

    def close(self) -> None:
        """Flush, then stop the thread."""
        with self._start:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.linger
            while len(batch) < BATCH and isinstance(batch[-1], _Item):
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            items = [item for item in batch if isinstance(item, _Item)]
            try:
                if items:
                    self._write(items)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is _STOP:
                return

    def _write(self, items: list[_Item]) -> None:
        try:
            store = self._store()
        except Exception:
            log.exception("could not log %d decisions: no store", len(items))
            return
        # two atomic writes; a failed batch is written again item by item (a decision
        # batch that failed wrote nothing, and prediction rows are upserted by key, so
        # nothing is written twice)
        self._each(items, lambda part: _decisions(store, part), "decision")
        self._each(items, lambda part: _predictions(store, part), "predictions")

    def _each(self, items: list[_Item], write: Callable[[list[_Item]], None], what: str) -> None:
        try:
            write(items)
        except Exception:
            if len(items) > 1:
                for item in items:
                    self._each([item], write, what)
                return
            d = items[0].decision
            log.exception(
                "could not log the %s of %s %s at %s",
                what,
                d.get("symbol"),
                d.get("timeframe"),
                d.get("ts"),
            )


def _decisions(store: Store, items: list[_Item]) -> None:
    from mlengine.llm.signal_log import log_decisions

    log_decisions(store, [item.decision for item in items])


def _predictions(store: Store, items: list[_Item]) -> None:
    frame = pd.concat([item.predictions for item in items], ignore_index=True)
    store.insert_records("ml.predictions", frame)
