"""What every serializer shares: the :class:`Serializer` interface, errors, digests, meta files.

Content digests are computed while the data is written (:class:`_HashingFile`), so a
saved value's digest (for cache keys and verification) costs almost nothing on top of the
write. Standard library only (this runs inside step kernels).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterable
from typing import Any

META = "meta.json"
try:
    # XXH3-128: a content digest for cache keys and verification, not a security boundary
    # (nothing adversarial writes a step's outputs). ~30 GiB/s a core against BLAKE3's ~6:
    # on a 45 MiB DataFrame that is 1.5 ms instead of 6.5 ms, a fifth of the whole save+load.
    from xxhash import xxh3_128 as _fast_hash

    DIGEST = "xxh3_128"
except ImportError:  # pragma: no cover - depends on the environment
    _fast_hash = None  # type: ignore[assignment,misc]
    DIGEST = "sha256"
_CHUNK = 1 << 26


class UnserializableValue(Exception):
    """A step output cannot be saved; the message names the variable, its type and the fix."""


class Unsupported(Exception):
    """Raised by a serializer's ``save`` to pass the value to the next serializer."""


def value_dirname(name: str) -> str:
    """Directory name for a variable or ``__state__:<name>`` pseudo-variable."""
    return name.replace(":", "-").replace(os.sep, "_")


def _type_name(value: Any) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


# ------------------------------------------------------------------------------------------
# Hashed writing
# ------------------------------------------------------------------------------------------


def _new_hash() -> Any:
    return _fast_hash() if _fast_hash is not None else hashlib.new(DIGEST)


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes what passes through (picklers, Arrow's IPC writer).

    Large writes are hashed in a thread while the main thread writes them: both the hashers
    and file writes release the GIL, so the digest costs almost nothing on top of the I/O
    when a core is free. Each write returns only once its bytes are hashed and written, so
    callers may reuse or free the buffer (Arrow passes temporaries for some of its writes).
    """

    def __init__(self, path: str) -> None:
        self._f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._h = _new_hash()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        for start in range(0, mv.nbytes, _CHUNK):
            part = mv[start : start + _CHUNK]
            if part.nbytes >= 1 << 20:
                t = threading.Thread(target=self._h.update, args=(part,))
                t.start()
                self._f.write(part)
                t.join()
            else:
                self._h.update(part)
                self._f.write(part)
        self.size += mv.nbytes
        return mv.nbytes

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()

    @property
    def digest(self) -> str:
        return f"{DIGEST}:{self._h.hexdigest()}"


def _write_hashed(path: str, chunks: Iterable[Any]) -> tuple[str, int]:
    """Write byte chunks to ``path`` while hashing them; return (digest, size)."""
    with _HashingFile(path) as f:
        for chunk in chunks:
            f.write(chunk)
    return f.digest, f.size


def _hash_file(path: str) -> tuple[str, int]:
    h = _new_hash()
    size = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            h.update(block)
            size += len(block)
    return f"{DIGEST}:{h.hexdigest()}", size


def _fresh_dir(directory: str) -> None:
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    elif os.path.lexists(directory):
        os.remove(directory)
    os.makedirs(directory)


def _write_meta(directory: str, meta: dict[str, Any]) -> None:
    with open(os.path.join(directory, META), "w") as f:
        json.dump(meta, f)


def _read_meta(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, META)) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------
# Serializers
# ------------------------------------------------------------------------------------------


class Serializer:
    """Base class: subclass, set ``name``, implement ``accepts``, ``save`` and ``load``.

    ``save(value, directory)`` writes data files into ``directory`` and returns
    ``(digest, size, extra)`` where ``extra`` is a JSON-able dict stored in ``meta.json``;
    it may raise :class:`Unsupported` to hand the value to the next serializer.
    """

    name = ""

    def accepts(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, value: Any, directory: str) -> tuple[str, int, dict[str, Any]]:
        raise NotImplementedError  # pragma: no cover - interface

    def load(self, directory: str, meta: dict[str, Any]) -> Any:
        raise NotImplementedError  # pragma: no cover - interface
