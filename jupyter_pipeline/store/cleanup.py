"""Cleaning the run store: runs whose runner died, and pruning old finished runs.

:meth:`CleanupMixin.recover_lost` marks local runs whose runner process is gone as failed
("runner lost") and kills what they left running; every open of the store calls it.
:meth:`CleanupMixin.prune` deletes old finished runs with their folders and reports the
cache keys no remaining run uses.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_pipeline.store.events import _log_event
from jupyter_pipeline.store.processes import kill_process_tree, process_alive
from jupyter_pipeline.store.schema import _FINISHED

RUNNER_LOST = "runner lost"


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


class CleanupMixin:
    """Recovery and pruning of :class:`~jupyter_pipeline.store.RunStore` (same connection)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _transaction(self) -> AbstractContextManager[sqlite3.Cursor]:  # pragma: no cover
        raise NotImplementedError

    @property
    def runs_dir(self) -> Path:  # pragma: no cover
        raise NotImplementedError

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
