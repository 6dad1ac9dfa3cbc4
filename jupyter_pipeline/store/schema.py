"""The run store's tables, their upgrades, and the mapping between rows and records.

The schema is created if missing on every open; :func:`migrate` adds the columns newer
than an existing database (stores outlive upgrades). :func:`_to_sql` and
:func:`_run_from_rows` convert between :class:`~jupyter_pipeline.model.Run` fields and
SQLite values (JSON for the dict columns).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import Run, RunState, StepRun

_FINISHED = tuple(s.value for s in RunState if s.finished)
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    notebook TEXT NOT NULL,
    backend TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    parameters TEXT NOT NULL DEFAULT '{}',
    run_dir TEXT,
    pid INTEGER,
    pid_created REAL,
    host TEXT,
    external_id TEXT,
    url TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    runner_signals INTEGER NOT NULL DEFAULT 0,
    pipeline_json TEXT,
    sweep_id TEXT,
    trial INTEGER
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    log_path TEXT,
    executed_notebook TEXT,
    html TEXT,
    outputs TEXT NOT NULL DEFAULT '{}',
    digests TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    error_cell INTEGER,
    external_id TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    cache_key TEXT,
    kernel_pid INTEGER,
    kernel_created REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    state TEXT
);
"""


# Columns holding JSON; everything else is a plain SQLite value.
_JSON_COLUMNS = {"parameters", "outputs", "digests", "metrics"}
_RUN_FIELDS = set(Run.model_fields) - {"id", "steps"}
_RUN_EXTRA = {"cancel_requested", "runner_signals", "pipeline_json", "pid_created", "host"}
_STEP_FIELDS = set(StepRun.model_fields) - {"step"}
_STEP_EXTRA = {"metrics", "cache_key", "kernel_pid", "kernel_created"}


def migrate(conn: sqlite3.Connection) -> None:
    """Add columns newer than the database (stores outlive upgrades)."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    if "runner_signals" not in have:
        with suppress(sqlite3.OperationalError):  # another process just added it
            conn.execute("ALTER TABLE runs ADD COLUMN runner_signals INTEGER NOT NULL DEFAULT 0")
    for column, kind in (("sweep_id", "TEXT"), ("trial", "INTEGER")):
        if column not in have:
            with suppress(sqlite3.OperationalError):
                conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")


def _to_sql(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return json.dumps(value if value is not None else {}, default=repr)
    if isinstance(value, RunState):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _run_from_rows(row: sqlite3.Row, steps: list[sqlite3.Row]) -> Run:
    step_runs = [
        StepRun(
            step=s["step"],
            state=RunState(s["state"]),
            started=s["started"],
            finished=s["finished"],
            attempts=s["attempts"],
            log_path=s["log_path"],
            executed_notebook=s["executed_notebook"],
            html=s["html"],
            outputs=json.loads(s["outputs"] or "{}"),
            digests=json.loads(s["digests"] or "{}"),
            error=s["error"],
            error_cell=s["error_cell"],
            external_id=s["external_id"],
        )
        for s in steps
    ]
    return Run(
        id=row["id"],
        pipeline=row["pipeline"],
        notebook=row["notebook"],
        backend=row["backend"],
        state=RunState(row["state"]),
        created=row["created"],
        started=row["started"],
        finished=row["finished"],
        parameters=json.loads(row["parameters"] or "{}"),
        steps=step_runs,
        run_dir=row["run_dir"],
        pid=row["pid"],
        external_id=row["external_id"],
        url=row["url"],
        error=row["error"],
        sweep_id=row["sweep_id"],
        trial=row["trial"],
    )
