"""The run store's event log: one row per visible change of a run or a step.

Each event is appended in the same transaction as the change it reports, so a reader
tailing the log by ``seq`` (the server's event stream) sees every change of every process
(CLI runs included) exactly once and in order.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

# Changes of these store-only fields are not events (nobody watches them).
_QUIET_FIELDS = {
    "kernel_pid",
    "kernel_created",
    "cancel_requested",
    "runner_signals",
    "pid",
    "pid_created",
    "cache_key",
    "digests",
    "metrics",
    "pipeline_json",
    "host",
}
_EVENTS_KEPT = 100_000  # older events are dropped (a client that far behind reloads)


@dataclass(frozen=True)
class StoreEvent:
    """One entry of the store's event log: a run or step changed (or a run was deleted).

    Attributes:
        seq: Position in the log; increases with every event, across processes.
        time: Unix time of the change.
        run_id: The run.
        kind: ``run``, ``step`` or ``deleted``.
        step: The step, for ``step`` events.
        state: The run's (or step's) state after the change; None for ``deleted``.
    """

    seq: int
    time: float
    run_id: str
    kind: str
    step: str | None
    state: str | None


def _log_event(
    cur: sqlite3.Cursor, run_id: str, kind: str, step: str | None, state: str | None, now: float
) -> None:
    cur.execute(
        "INSERT INTO events (time, run_id, kind, step, state) VALUES (?,?,?,?,?)",
        (now, run_id, kind, step, state),
    )


class EventLogMixin:
    """Event-log reads of :class:`~jupyter_pipeline.store.RunStore` (same connection, lock)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def last_event(self) -> int:
        """The ``seq`` of the newest event (0 if none): a cursor for :meth:`events_after`."""
        with self._lock:
            row = self._conn.execute("SELECT MAX(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def events_after(self, seq: int, limit: int = 1000) -> list[StoreEvent]:
        """Events with a ``seq`` greater than ``seq``, oldest first (at most ``limit``)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, time, run_id, kind, step, state FROM events WHERE seq > ?"
                " ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [StoreEvent(*tuple(r)) for r in rows]

    def first_event(self) -> int:
        """The ``seq`` of the oldest event kept (0 if none); older ones were dropped."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(seq) FROM events").fetchone()
        return int(row[0] or 0)
