"""Processes the run store records: is a runner or kernel still alive, and stopping one.

A pid alone can be reused; a pid with its start time (``process_started``) names one
process, so a runner that died is told apart from an unrelated process that took its pid.
"""

from __future__ import annotations

import os
from contextlib import suppress


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
