"""Run store: runs and their steps in SQLite, shared by the CLI, the runners and the server.

One file (WAL mode) that several processes open at once: a run started in a terminal is
visible to the Jupyter server, and ``jupyter-pipeline cancel`` can reach a runner in another
process. Every write is a short autocommit transaction, so a runner that is killed loses at
most the write it was doing; the next open of the store notices runs whose runner process is
gone and marks them failed ("runner lost").
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import Pipeline, Run, RunState, StepRun
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

RUNNER_LOST = "runner lost"
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

# The event log: one row per visible change of a run or a step, appended in the same
# transaction as the change, so a reader tailing it by ``seq`` (the server's event stream)
# sees every change of every process (CLI runs included) exactly once and in order.
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

# Columns holding JSON; everything else is a plain SQLite value.
_JSON_COLUMNS = {"parameters", "outputs", "digests", "metrics"}
_RUN_FIELDS = set(Run.model_fields) - {"id", "steps"}
_RUN_EXTRA = {"cancel_requested", "runner_signals", "pipeline_json", "pid_created", "host"}
_STEP_FIELDS = set(StepRun.model_fields) - {"step"}
_STEP_EXTRA = {"metrics", "cache_key", "kernel_pid", "kernel_created"}


def default_store_path() -> Path:
    """Where the store lives unless told otherwise.

    ``$JUPYTER_PIPELINE_STORE`` if set, else ``<jupyter data dir>/pipeline/runs.sqlite``.
    """
    env = os.environ.get("JUPYTER_PIPELINE_STORE")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "pipeline" / "runs.sqlite"


def process_started(pid: int) -> float | None:
    """Start time of process ``pid``, or None if it does not exist (or is a zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_alive(pid: int | None, created: float | None = None) -> bool:
    """True if ``pid`` runs and (when ``created`` is known) is the same process, not a reuse."""
    if not pid:
        return False
    now_created = process_started(pid)
    if now_created is None:
        return False
    return created is None or abs(now_created - created) < 1.0


def kill_process_tree(pid: int, created: float | None = None) -> None:
    """Kill a process, its process group (kernels lead their own) and all its descendants.

    If the process itself is already gone (a kernel that noticed its runner died exits on
    its own), what is left of its process group is still killed: Linux never hands out a
    pid still used as a group id, so that group can only hold the kernel's orphans. Does
    nothing if ``created`` shows the pid now belongs to another process.
    """
    import signal

    import psutil

    if pid <= 0:
        return  # os.killpg(0) would kill our own process group
    alive = process_alive(pid, created)
    if not alive and created is not None and process_started(pid) is not None:
        return  # the pid was reused by an unrelated process: leave it alone
    children: list[psutil.Process] = []
    if alive:
        with suppress(psutil.Error):
            children = psutil.Process(pid).children(recursive=True)
    try:
        # Kernels are started in a new session, so their group id is their pid; killing the
        # group takes subprocesses that did not start their own session.
        if not alive or os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for child in children:
        with suppress(psutil.Error):
            child.kill()
    psutil.wait_procs([*children], timeout=3)
    if alive:
        with suppress(psutil.Error, ChildProcessError):
            psutil.Process(pid).wait(timeout=3)


class RunStore(SweepStoreMixin):
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
            self._migrate()
            self._conn.executescript(SWEEP_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self.recover_lost()

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        """Add columns newer than the database (stores outlive upgrades)."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        if "runner_signals" not in have:
            with suppress(sqlite3.OperationalError):  # another process just added it
                self._conn.execute(
                    "ALTER TABLE runs ADD COLUMN runner_signals INTEGER NOT NULL DEFAULT 0"
                )
        for column, kind in (("sweep_id", "TEXT"), ("trial", "INTEGER")):
            if column not in have:
                with suppress(sqlite3.OperationalError):
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")

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

    # ------------------------------------------------------------------ pruning

    def prune(
        self,
        *,
        keep: int | None = None,
        older_than: float | None = None,
        dry_run: bool = False,
        now: float | None = None,
    ) -> PruneResult:
        """Delete old finished runs: their records, steps and run folders.

        A queued or running run is never deleted (nor counted). With ``keep``, the ``keep``
        newest finished runs stay; with ``older_than``, only runs created more than that
        many seconds ago go; with both, a run goes when it is outside the newest ``keep``
        *and* old enough. A run folder is deleted only when it lies under :attr:`runs_dir`
        (a folder given by hand is the user's).

        Args:
            keep: How many of the newest finished runs to keep.
            older_than: Minimum age in seconds of a run to delete.
            dry_run: Only report what would be deleted.
            now: The current time (default: ``time.time()``).

        Returns:
            What was (or would be) removed, and the cache keys no remaining run references.

        Raises:
            ValueError: Neither ``keep`` nor ``older_than`` given, or a negative one.
        """
        if keep is None and older_than is None:
            raise ValueError("say what to prune: keep N newest runs and/or older than DAYS")
        if (keep is not None and keep < 0) or (older_than is not None and older_than < 0):
            raise ValueError("keep and older_than must not be negative")
        self.recover_lost()  # a run whose runner died is finished, so it can be pruned
        now = time.time() if now is None else now
        marks = ",".join("?" * len(_FINISHED))
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, state, created, run_dir, backend FROM runs ORDER BY created DESC"
            ).fetchall()
        result = PruneResult(active=[r["id"] for r in rows if r["state"] not in _FINISHED])
        finished = [r for r in rows if r["state"] in _FINISHED]
        doomed = finished[keep:] if keep is not None else finished
        if older_than is not None:
            doomed = [r for r in doomed if r["created"] < now - older_than]
        if not doomed:
            return result
        ids = [r["id"] for r in doomed]
        runs_dir = self.runs_dir.resolve()
        folders = []
        for r in doomed:
            if r["run_dir"]:
                folder = Path(r["run_dir"]).resolve()
                if folder.is_relative_to(runs_dir) and folder != runs_dir:
                    folders.append(folder)
        in_ids = ",".join("?" * len(ids))
        with self._transaction() as cur:
            keys = {
                k[0]
                for k in cur.execute(
                    f"SELECT DISTINCT cache_key FROM steps WHERE run_id IN ({in_ids})"
                    " AND cache_key IS NOT NULL",
                    ids,
                )
            }
            still = {
                k[0]
                for k in cur.execute(
                    f"SELECT DISTINCT cache_key FROM steps WHERE run_id NOT IN ({in_ids})"
                    " AND cache_key IS NOT NULL",
                    ids,
                )
            }
            if not dry_run:
                # Re-check the state inside the transaction (steps go by cascade).
                cur.execute(
                    f"DELETE FROM runs WHERE id IN ({in_ids}) AND state IN ({marks})",
                    (*ids, *_FINISHED),
                )
                for run_id in ids:
                    _log_event(cur, run_id, "deleted", None, None, time.time())
            busy = cur.execute(
                "SELECT 1 FROM runs WHERE backend='local' AND state IN ('queued','running')"
            ).fetchone()
        result.runs = ids
        result.folders = folders
        result.cache_keys = [] if busy else sorted(keys - still)
        if not dry_run:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
        return result

    # ------------------------------------------------------------------ recovery

    def recover_lost(self) -> list[str]:
        """Mark local runs whose runner process died as failed ("runner lost").

        Only runs started on this host are checked (a pid means nothing elsewhere). Their
        running steps become failed, their queued steps cancelled, and any kernel a step
        recorded that is still alive is killed, so nothing keeps computing for a dead run.

        Returns:
            Ids of the runs marked lost.
        """
        host = socket.gethostname()
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, pid, pid_created FROM runs WHERE backend='local' AND host=?"
                " AND state IN ('queued','running') AND pid IS NOT NULL",
                (host,),
            ).fetchall()
        lost = [r["id"] for r in rows if not process_alive(r["pid"], r["pid_created"])]
        now = time.time()
        for run_id in lost:
            with self._transaction() as cur:
                # Re-check inside the transaction: another process may have recovered it.
                state = cur.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
                if state is None or state[0] not in ("queued", "running"):
                    continue
                kernels = cur.execute(
                    "SELECT kernel_pid, kernel_created FROM steps WHERE run_id=?"
                    " AND state IN ('queued','running') AND kernel_pid IS NOT NULL",
                    (run_id,),
                ).fetchall()
                changed = cur.execute(
                    "SELECT step, state FROM steps WHERE run_id=?"
                    " AND state IN ('queued','running')",
                    (run_id,),
                ).fetchall()
                cur.execute(
                    "UPDATE steps SET state='failed', error=?, finished=? WHERE run_id=?"
                    " AND state='running'",
                    (RUNNER_LOST, now, run_id),
                )
                cur.execute(
                    "UPDATE steps SET state='cancelled' WHERE run_id=? AND state='queued'",
                    (run_id,),
                )
                cur.execute(
                    "UPDATE runs SET state='failed', error=?, finished=? WHERE id=?",
                    (RUNNER_LOST, now, run_id),
                )
                for c in changed:
                    new_state = "failed" if c[1] == "running" else "cancelled"
                    _log_event(cur, run_id, "step", c[0], new_state, now)
                _log_event(cur, run_id, "run", None, "failed", now)
            for k in kernels:
                kill_process_tree(k[0], k[1])
        return lost


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


@dataclass
class PruneResult:
    """What :meth:`RunStore.prune` removed.

    Attributes:
        runs: Ids of the runs deleted (records, steps and run folders).
        folders: Run folders deleted.
        cache_keys: Step-cache keys that only deleted runs referenced; the caller removes
            those entries (:meth:`jupyter_pipeline.runners.cache.StepCache.remove`). Empty
            while a local run is active, since it may be reading any entry.
        active: Runs left alone because they are queued or running.
    """

    runs: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)


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
