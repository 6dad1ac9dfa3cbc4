"""Private temporary folders named after their owner process, and the removal of stale ones.

The runtime keeps Unix sockets in folders of the system's temporary directory: a kernel's
connection sockets (``jp-kernel-*``) and a fork server's socket and log
(``jp-forkserver-*``). Their owner removes them when it ends normally; a process that is
SIGKILLed cannot. Each folder's name carries its owner's pid (``PREFIX<pid>-<random>``), so
a later process can tell the folders of owners that are gone and remove them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["private_dir", "remove_stale"]


def private_dir(prefix: str) -> str:
    """A new private (0700) folder ``<tmp>/<prefix><pid>-<random>`` owned by this process."""
    return tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")


def remove_stale(prefix: str) -> list[str]:
    """Remove this user's ``<prefix><pid>-*`` folders whose owner process no longer exists.

    A folder whose owner still runs (or whose pid another process has taken since) is
    left alone: removing a live kernel's sockets would cut it off. Returns what was removed.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        owner = entry.name[len(prefix) :].split("-", 1)[0]
        if not owner.isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _exists(int(owner)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
