"""Which file a call reads or writes, when its path is written as a string literal.

One rule for everything that looks at files by literal path: the analysis' file
diagnostics (a file one step writes and another reads) and the step cache (the content of
the data files a step reads is part of its key, :func:`jupyter_pipeline.runners.cache.
files_read`). Both call :func:`literal_file_access`, so they always see the same files.
"""

from __future__ import annotations

from collections.abc import Callable

from jupyter_pipeline.analysis.facts import CallInfo
from jupyter_pipeline.analysis.knowledge import FILE_READERS, FILE_WRITERS, PATH_TYPES

__all__ = ["literal_file_access", "usable_path"]

# Keyword arguments that name the file of a reader or writer (pandas, numpy, joblib, PIL…).
_PATH_KEYWORDS = ("path", "path_or_buf", "filepath_or_buffer", "fname", "filename", "file")


def usable_path(path: str | None) -> bool:
    """True for a string that can name a local file: not a URL, no newline, not huge."""
    return path is not None and 0 < len(path) <= 400 and "\n" not in path and "://" not in path


def literal_file_access(
    call: CallInfo,
    full: str | None,
    resolve: Callable[[tuple[str, ...]], str | None],
) -> tuple[str, bool] | None:
    """``(path, writes)`` when ``call`` reads or writes a file named by a string literal.

    ``open('x')`` (writing when its mode has ``w``, ``a``, ``x`` or ``+``), the readers and
    writers of :mod:`jupyter_pipeline.analysis.knowledge` by dotted name or method name
    (``pd.read_csv('x')``, ``np.load(file='x')``, ``df.to_csv('x')``), and pathlib's methods
    on a literal path (``Path('x').read_text()``).

    Args:
        call: The call, as the cell facts record it.
        full: Its callee's resolved dotted name (``pandas.read_csv``; ``open`` for the
            builtin), or None when unknown.
        resolve: Resolves a dotted callee (``("Path",)``) to its full name
            (``pathlib.Path``), for the receiver of a pathlib method.

    Returns:
        None when the call touches no file by literal path, or the path is no local file
        (a URL, a multi-line string).
    """
    last = call.path[-1] if call.path else call.method
    if not last:
        return None
    found: tuple[str | None, bool] | None = None
    if full == "open" or (len(call.path) == 1 and last == "open" and full is None):
        path = call.strings[0] if call.strings else call.kwstrings.get("file")
        mode = (call.strings[1] if len(call.strings) > 1 else None) or call.kwstrings.get("mode")
        found = (path, any(c in (mode or "r") for c in "wax+"))
    else:
        for table, writes in ((FILE_WRITERS, True), (FILE_READERS, False)):
            k = table.get(full or "", table.get(last))
            if k is None:
                continue
            if k == -1:
                # pathlib methods: the path is the receiver, seen when it is `Path('lit')`
                receiver = call.receiver
                if receiver is not None and resolve(receiver[0]) in PATH_TYPES:
                    found = (receiver[1], writes)
                break
            path = call.strings[k] if k < len(call.strings) else None
            for key in _PATH_KEYWORDS:
                if path is None:
                    path = call.kwstrings.get(key)
            found = (path, writes)
            break
    if found is None or found[0] is None or not usable_path(found[0]):
        return None
    return found[0], found[1]
