"""Sweeps in the run store: a sweep row, and its trials as ordinary runs tagged with its id.

A trial is a run like any other (``runs``, ``show``, ``logs``, ``cancel`` work on it); the
runs table carries ``sweep_id`` and ``trial`` (its index). The sweep row keeps what the runs
cannot say: the planned parameter sets (a trial that has not started has no run yet), the
axes, the ranking metric and the sweep's own process, for cancel and runner-lost recovery.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from jupyter_pipeline.model import RunState, Sweep, SweepTrial

__all__ = ["SWEEP_SCHEMA", "SweepStoreMixin", "best_trial"]

SWEEP_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    notebook TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    axes TEXT NOT NULL DEFAULT '{}',
    parameters TEXT NOT NULL DEFAULT '{}',
    shared_steps TEXT NOT NULL DEFAULT '[]',
    trials TEXT NOT NULL DEFAULT '[]',
    metric TEXT,
    maximize INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    pid INTEGER,
    pid_created REAL,
    host TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep_id);
"""

_SWEEP_FIELDS = {"state", "finished", "error", "metric", "maximize", "cancel_requested"}


def best_trial(trials: list[SweepTrial], metric: str | None, maximize: bool) -> int | None:
    """Index of the best succeeded trial by ``metric`` (numbers only; ties: the first)."""
    if metric is None:
        return None
    best: tuple[float, int] | None = None
    for t in trials:
        value = t.metrics.get(metric)
        if t.state is not RunState.succeeded or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or math.isnan(value):
            continue
        score = float(value) if maximize else -float(value)
        if best is None or score > best[0]:
            best = (score, t.index)
    return best[1] if best else None


class SweepStoreMixin:
    """Sweep methods of :class:`~jupyter_pipeline.store.RunStore` (same connection and lock)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:  # pragma: no cover
        raise NotImplementedError

    def update_run(
        self, run_id: str, *, if_unfinished: bool = False, **fields: Any
    ) -> bool:  # pragma: no cover
        raise NotImplementedError

    def get_metrics(self, run_id: str) -> dict[str, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def create_sweep(
        self,
        *,
        pipeline: str,
        notebook: str,
        axes: dict[str, list[Any]],
        trials: list[dict[str, Any]],
        parameters: dict[str, Any],
        shared_steps: list[str],
        metric: str | None,
        maximize: bool,
        pid: int | None,
    ) -> Sweep:
        """Record a new sweep (state ``running``) with its planned trials."""
        from jupyter_pipeline.store import process_started

        with self._transaction() as cur:
            while True:
                sweep_id = "sw" + secrets.token_hex(3)
                if not cur.execute("SELECT 1 FROM sweeps WHERE id=?", (sweep_id,)).fetchone():
                    break
            cur.execute(
                "INSERT INTO sweeps (id, pipeline, notebook, state, created, axes, parameters,"
                " shared_steps, trials, metric, maximize, pid, pid_created, host)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    sweep_id,
                    pipeline,
                    notebook,
                    RunState.running.value,
                    time.time(),
                    json.dumps(axes, default=repr),
                    json.dumps(parameters, default=repr),
                    json.dumps(shared_steps),
                    json.dumps(trials, default=repr),
                    metric,
                    int(maximize),
                    pid,
                    process_started(pid) if pid else None,
                    socket.gethostname(),
                ),
            )
        return self.get_sweep(sweep_id)

    def update_sweep(self, sweep_id: str, **fields: Any) -> None:
        """Set ``state``, ``finished``, ``error``, ``metric``, ``maximize`` or
        ``cancel_requested`` of a sweep.

        Raises:
            TypeError: Unknown field.
            KeyError: Unknown sweep.
        """
        unknown = set(fields) - _SWEEP_FIELDS
        if unknown:
            raise TypeError(f"unknown sweep field(s): {', '.join(sorted(unknown))}")
        if not fields:
            return
        values = [
            v.value if isinstance(v, RunState) else int(v) if isinstance(v, bool) else v
            for v in fields.values()
        ]
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            cur = self._conn.execute(f"UPDATE sweeps SET {cols} WHERE id=?", (*values, sweep_id))
        if cur.rowcount == 0:
            raise KeyError(f"no sweep {sweep_id!r}")

    def attach_trial(self, sweep_id: str, run_id: str, trial: int) -> None:
        """Mark run ``run_id`` as trial number ``trial`` of the sweep."""
        self.update_run(run_id, sweep_id=sweep_id, trial=trial)

    def is_sweep_id(self, ident: str) -> bool:
        """True if ``ident`` is a sweep id or a unique prefix of one (at least ``sw`` + 1)."""
        return self._resolve_sweep(ident) is not None

    def _resolve_sweep(self, ident: str) -> str | None:
        if not re.fullmatch(r"sw[0-9a-f]+", ident):
            return None  # also keeps LIKE's wildcards out of the prefix
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM sweeps WHERE id LIKE ? LIMIT 2", (ident + "%",)
            ).fetchall()
        return rows[0][0] if len(rows) == 1 else None

    def sweep_cancel_requested(self, sweep_id: str) -> bool:
        """True once someone asked the sweep to stop."""
        with self._lock:
            row = self._conn.execute(
                "SELECT cancel_requested FROM sweeps WHERE id=?", (sweep_id,)
            ).fetchone()
        return bool(row and row[0])

    def sweep_runner(self, sweep_id: str) -> tuple[int | None, float | None, str | None]:
        """(pid, pid start time, host) of the process running a sweep."""
        with self._lock:
            row = self._conn.execute(
                "SELECT pid, pid_created, host FROM sweeps WHERE id=?", (sweep_id,)
            ).fetchone()
        if row is None:
            raise KeyError(f"no sweep {sweep_id!r}")
        return row[0], row[1], row[2]

    def get_sweep(self, ident: str) -> Sweep:
        """The sweep with this id (or unique prefix), its trials joined with their runs.

        A sweep whose process died while running is marked failed ("runner lost") here.

        Raises:
            KeyError: No such sweep.
        """
        from jupyter_pipeline.store import RUNNER_LOST, process_alive

        sweep_id = self._resolve_sweep(ident)
        if sweep_id is None:
            raise KeyError(f"no sweep {ident!r}; see `jupyter-pipeline sweeps`")
        with self._lock:
            row = self._conn.execute("SELECT * FROM sweeps WHERE id=?", (sweep_id,)).fetchone()
            runs = self._conn.execute(
                "SELECT id, trial, state, error FROM runs WHERE sweep_id=?", (sweep_id,)
            ).fetchall()
        state = RunState(row["state"])
        if (
            not state.finished
            and row["host"] == socket.gethostname()
            and not process_alive(row["pid"], row["pid_created"])
        ):
            self.update_sweep(
                sweep_id, state=RunState.failed, finished=time.time(), error=RUNNER_LOST
            )
            return self.get_sweep(sweep_id)
        by_trial = {r["trial"]: r for r in runs}
        trials = []
        for i, params in enumerate(json.loads(row["trials"])):
            trial = SweepTrial(index=i, parameters=params)
            r = by_trial.get(i)
            if r is not None:
                trial.run_id, trial.state, trial.error = r["id"], RunState(r["state"]), r["error"]
                metrics = self.get_metrics(r["id"])
                trial.metrics = {k: v for values in metrics.values() for k, v in values.items()}
            elif state.finished:
                trial.state = RunState.cancelled  # the sweep ended before it started
            trials.append(trial)
        metric, maximize = row["metric"], bool(row["maximize"])
        return Sweep(
            id=sweep_id,
            pipeline=row["pipeline"],
            notebook=row["notebook"],
            state=state,
            created=row["created"],
            finished=row["finished"],
            axes=json.loads(row["axes"]),
            parameters=json.loads(row["parameters"]),
            shared_steps=json.loads(row["shared_steps"]),
            trials=trials,
            metric=metric,
            maximize=maximize,
            best=best_trial(trials, metric, maximize),
            error=row["error"],
        )

    def list_sweeps(self, limit: int = 20) -> Iterator[Sweep]:
        """The most recent sweeps, newest first."""
        with self._lock:
            ids = [
                r[0]
                for r in self._conn.execute(
                    "SELECT id FROM sweeps ORDER BY created DESC LIMIT ?", (limit,)
                )
            ]
        for sweep_id in ids:
            yield self.get_sweep(sweep_id)
