"""Run store: runs and their steps in SQLite, shared by the CLI, the runners and the server.

One file (WAL mode) that several processes open at once: a run started in a terminal is
visible to the Jupyter server, and ``jupyter-pipeline cancel`` can reach a runner in another
process. Every write is a short autocommit transaction, so a runner that is killed loses at
most the write it was doing; the next open of the store notices runs whose runner process is
gone and marks them failed ("runner lost").

This module holds :class:`RunStore`'s connection, its writes and its reads of runs; the
rest of it lives beside it, one concern a module: :mod:`.schema` (tables, upgrades, rows to
records), :mod:`.events` (the event log), :mod:`.cleanup` (runner-lost recovery, pruning),
:mod:`.processes` (is a recorded process alive, stopping one), :mod:`.sweeps` (sweeps).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import Pipeline, Run, RunState
from jupyter_pipeline.store.cleanup import RUNNER_LOST, CleanupMixin, PruneResult
from jupyter_pipeline.store.events import (
    _EVENTS_KEPT,
    _QUIET_FIELDS,
    EventLogMixin,
    StoreEvent,
    _log_event,
)
from jupyter_pipeline.store.processes import kill_process_tree, process_alive, process_started
from jupyter_pipeline.store.schema import (
    _FINISHED,
    _RUN_EXTRA,
    _RUN_FIELDS,
    _SCHEMA,
    _SCHEMA_VERSION,
    _STEP_EXTRA,
    _STEP_FIELDS,
    _run_from_rows,
    _to_sql,
    migrate,
)
from jupyter_pipeline.store.sweeps import SWEEP_SCHEMA, SweepStoreMixin

__all__ = [
    "RUNNER_LOST",
    "PruneResult",
    "RunStore",
    "StoreEvent",
    "default_store_path",
    "kill_process_tree",
    "process_alive",
    "process_started",
]


def default_store_path() -> Path:
    """Where the store lives unless told otherwise.

    ``$JUPYTER_PIPELINE_STORE`` if set, else ``<jupyter data dir>/pipeline/runs.sqlite``.
    """
    env = os.environ.get("JUPYTER_PIPELINE_STORE")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "pipeline" / "runs.sqlite"


class RunStore(EventLogMixin, CleanupMixin, SweepStoreMixin):
    """SQLite-backed store of :class:`~jupyter_pipeline.model.Run` records.

    Safe to use from several threads (one connection, a lock) and several processes (WAL,
    busy timeout, short transactions). Opening the store marks runs whose local runner
    process has died as failed with error ``"runner lost"``.

    Args:
        path: Database file. Default: :func:`default_store_path`.
        runs_dir: Folder for new run folders. Default: ``runs/`` beside the database.
    """

    def __init__(self, path: str | Path | None = None, *, runs_dir: str | Path | None = None):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self._runs_dir = Path(runs_dir).expanduser() if runs_dir is not None else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            # executescript commits on its own; run it outside an explicit transaction.
            self._conn.executescript(_SCHEMA)
            migrate(self._conn)
            self._conn.executescript(SWEEP_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self.recover_lost()

    # ------------------------------------------------------------------ plumbing

    @property
    def folder(self) -> Path:
        """Folder of the database; run folders and the step cache live beside it."""
        return self.path.parent

    @property
    def runs_dir(self) -> Path:
        """Folder holding one sub-folder per local run."""
        return self._runs_dir if self._runs_dir is not None else self.folder / "runs"

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction taken up front, so two processes never deadlock upgrading."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")

    # ------------------------------------------------------------------ writes

    def create_run(
        self,
        pipeline: Pipeline,
        *,
        notebook: str | Path,
        backend: str = "local",
        parameters: dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        pid: int | None = None,
        external_id: str | None = None,
        url: str | None = None,
        state: RunState = RunState.queued,
    ) -> Run:
        """Record a new run with every step queued.

        Args:
            pipeline: The analyzed pipeline (its steps become the run's steps, in order).
            notebook: Source notebook path (stored absolute).
            backend: ``local`` or ``kfp``.
            parameters: Parameter values used.
            run_dir: Folder of the run's files; for local runs, usually
                ``self.runs_dir / run.id`` (see :meth:`new_run_dir`).
            pid: Runner process id; a local run whose runner dies is then detected.
            external_id: Backend run id (KFP).
            url: Backend UI link (KFP).
            state: Initial state.

        Returns:
            The stored run.
        """
        now = time.time()
        pid_created = process_started(pid) if pid else None
        with self._transaction() as cur:
            run_id = self._new_id(cur)
            cur.execute(
                "INSERT INTO runs (id, pipeline, notebook, backend, state, created, parameters,"
                " run_dir, pid, pid_created, host, external_id, url, pipeline_json)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    pipeline.name,
                    str(Path(notebook).absolute()),
                    backend,
                    RunState(state).value,
                    now,
                    json.dumps(parameters or {}, default=repr),
                    str(run_dir) if run_dir is not None else None,
                    pid,
                    pid_created,
                    socket.gethostname(),
                    external_id,
                    url,
                    pipeline.model_dump_json(),
                ),
            )
            cur.executemany(
                "INSERT INTO steps (run_id, idx, step, state) VALUES (?,?,?,?)",
                [(run_id, i, s.name, RunState.queued.value) for i, s in enumerate(pipeline.steps)],
            )
            _log_event(cur, run_id, "run", None, RunState(state).value, now)
            cur.execute(
                "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?",
                (_EVENTS_KEPT,),
            )
        return self.get_run(run_id)

    @staticmethod
    def _new_id(cur: sqlite3.Cursor) -> str:
        while True:
            run_id = secrets.token_hex(4)
            if cur.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone() is None:
                return run_id

    def new_run_dir(self, run_id: str) -> Path:
        """Create and return ``runs/<run_id>/`` beside the database."""
        d = self.runs_dir / run_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def update_run(self, run_id: str, *, if_unfinished: bool = False, **fields: Any) -> bool:
        """Set fields of a run (any :class:`Run` field except ``id``/``steps``).

        Also accepts ``cancel_requested`` (bool).

        Args:
            if_unfinished: Only while the run is queued or running (checked in the same
                statement): a process following a run elsewhere (the KFP watcher) cannot
                bring back to life a run another process just cancelled.

        Returns:
            False if ``if_unfinished`` held it back, else True.

        Raises:
            KeyError: Unknown run.
            TypeError: Unknown field.
        """
        return self._update(
            "runs", "id=?", (run_id,), fields, _RUN_FIELDS | _RUN_EXTRA, run_id, if_unfinished
        )

    def update_step(
        self, run_id: str, step: str, *, if_unfinished: bool = False, **fields: Any
    ) -> bool:
        """Set fields of one step of a run (any :class:`StepRun` field except ``step``).

        Also accepts ``metrics`` (dict), ``cache_key`` and ``kernel_pid`` (the step's kernel,
        killed if the runner is lost).

        Args:
            if_unfinished: Only while the step is queued or running (see :meth:`update_run`).

        Returns:
            False if ``if_unfinished`` held it back, else True.

        Raises:
            KeyError: Unknown run or step.
            TypeError: Unknown field.
        """
        if "kernel_pid" in fields and "kernel_created" not in fields:
            pid = fields["kernel_pid"]
            fields["kernel_created"] = process_started(pid) if pid else None
        return self._update(
            "steps",
            "run_id=? AND step=?",
            (run_id, step),
            fields,
            _STEP_FIELDS | _STEP_EXTRA,
            f"{run_id}/{step}",
            if_unfinished,
        )

    def _update(
        self,
        table: str,
        where: str,
        key: tuple[Any, ...],
        fields: dict[str, Any],
        allowed: set[str],
        what: str,
        if_unfinished: bool = False,
    ) -> bool:
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"unknown {table} field(s): {', '.join(sorted(unknown))}")
        if not fields:
            return True
        cols, values = [], []
        for name, value in fields.items():
            cols.append(f"{name}=?")
            values.append(_to_sql(name, value))
        sql = f"UPDATE {table} SET {', '.join(cols)} WHERE {where}"
        params: tuple[Any, ...] = (*values, *key)
        if if_unfinished:
            sql += f" AND state NOT IN ({','.join('?' * len(_FINISHED))})"
            params = (*params, *_FINISHED)

        def missing(cur: sqlite3.Cursor) -> bool:
            """Nothing updated: False if the guard held it back, else KeyError."""
            if (
                if_unfinished
                and cur.execute(f"SELECT 1 FROM {table} WHERE {where}", key).fetchone()
            ):
                return False
            raise KeyError(f"no such run or step: {what}")

        if not set(fields) - _QUIET_FIELDS:
            with self._lock:
                cur = self._conn.execute(sql, params)
                if cur.rowcount == 0:
                    return missing(cur)
            return True
        with self._transaction() as cur:
            cur.execute(sql, params)
            if cur.rowcount == 0:
                return missing(cur)
            row = cur.execute(f"SELECT state FROM {table} WHERE {where}", key).fetchone()
            step = key[1] if table == "steps" else None
            _log_event(cur, key[0], "step" if step else "run", step, row[0], time.time())
        return True

    def request_cancel(self, run_id: str) -> None:
        """Flag a run for cancellation; its runner (in any process) polls the flag."""
        self.update_run(self.resolve_id(run_id), cancel_requested=1)

    def cancel_requested(self, run_id: str) -> bool:
        """True if :meth:`request_cancel` was called for the run."""
        with self._lock:
            row = self._conn.execute(
                "SELECT cancel_requested FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        return bool(row and row[0])

    # ------------------------------------------------------------------ reads

    def resolve_id(self, run_id: str) -> str:
        """Turn a full id or a unique prefix of one into the full id.

        Raises:
            KeyError: No run, or several runs, match.
        """
        with self._lock:
            if self._conn.execute("SELECT 1 FROM runs WHERE id=?", (run_id,)).fetchone():
                return run_id
            escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._conn.execute(
                "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 6", (escaped + "%",)
            ).fetchall()
        if not rows or not run_id:
            raise KeyError(f"no run {run_id!r} in {self.path}; see `jupyter-pipeline runs`")
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows)
            raise KeyError(f"run id prefix {run_id!r} is ambiguous ({ids}); give more characters")
        return rows[0][0]

    def get_run(self, run_id: str) -> Run:
        """Return the run with this id (or unique id prefix), steps in pipeline order.

        Raises:
            KeyError: No such run, or the prefix is ambiguous.
        """
        run_id = self.resolve_id(run_id)
        with self._lock:
            row = self._conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            steps = self._conn.execute(
                "SELECT * FROM steps WHERE run_id=? ORDER BY idx", (run_id,)
            ).fetchall()
        return _run_from_rows(row, steps)

    def list_runs(
        self,
        limit: int = 50,
        *,
        notebook: str | Path | None = None,
        before: float | None = None,
    ) -> list[Run]:
        """The most recent runs, newest first.

        Args:
            limit: At most this many.
            notebook: Only runs of this notebook (its absolute path).
            before: Only runs created before this time (paging: pass the last one's).
        """
        self.recover_lost()
        where: list[str] = []
        args: list[Any] = []
        if notebook is not None:
            where.append("notebook=?")
            args.append(str(Path(notebook).absolute()))
        if before is not None:
            where.append("created<?")
            args.append(before)
        cond = f"WHERE {' AND '.join(where)} " if where else ""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM runs {cond}ORDER BY created DESC LIMIT ?", (*args, limit)
            ).fetchall()
            ids = [r["id"] for r in rows]
            steps: dict[str, list[sqlite3.Row]] = {i: [] for i in ids}
            if ids:
                marks = ",".join("?" * len(ids))
                for s in self._conn.execute(
                    f"SELECT * FROM steps WHERE run_id IN ({marks}) ORDER BY idx", ids
                ):
                    steps[s["run_id"]].append(s)
        return [_run_from_rows(r, steps[r["id"]]) for r in rows]

    def get_pipeline(self, run_id: str) -> Pipeline | None:
        """The pipeline a run was made from, as recorded when it was created."""
        run_id = self.resolve_id(run_id)
        with self._lock:
            row = self._conn.execute(
                "SELECT pipeline_json FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        return Pipeline.model_validate_json(row[0]) if row and row[0] else None

    def get_metrics(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Metrics reported by each step of a run (only steps that reported any)."""
        run_id = self.resolve_id(run_id)
        with self._lock:
            rows = self._conn.execute(
                "SELECT step, metrics FROM steps WHERE run_id=? ORDER BY idx", (run_id,)
            ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows if r[1] and r[1] != "{}"}

    def step_extra(self, run_id: str, step: str) -> dict[str, Any]:
        """Store-only step fields: ``cache_key``, ``kernel_pid``, ``kernel_created``."""
        with self._lock:
            row = self._conn.execute(
                "SELECT cache_key, kernel_pid, kernel_created FROM steps WHERE run_id=? AND step=?",
                (run_id, step),
            ).fetchone()
        if row is None:
            raise KeyError(f"no such run or step: {run_id}/{step}")
        return dict(row)

    def recent_cache_keys(
        self, notebook: str | Path, step: str, limit: int = 20
    ) -> list[tuple[str, str]]:
        """``(run id, cache key)`` of a step in earlier local runs of a notebook, newest first.

        For plans: the step's last key tells why it would run again now.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT r.id, s.cache_key FROM steps s JOIN runs r ON r.id = s.run_id"
                " WHERE r.notebook=? AND s.step=? AND s.cache_key IS NOT NULL"
                " ORDER BY r.created DESC LIMIT ?",
                (str(Path(notebook).absolute()), step, limit),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def runner_of(self, run_id: str) -> tuple[int | None, float | None, str | None, bool]:
        """(pid, pid start time, host, handles SIGTERM) of the process running a run."""
        run_id = self.resolve_id(run_id)
        with self._lock:
            row = self._conn.execute(
                "SELECT pid, pid_created, host, runner_signals FROM runs WHERE id=?", (run_id,)
            ).fetchone()
        return row[0], row[1], row[2], bool(row[3])

    # ------------------------------------------------------------------ events
