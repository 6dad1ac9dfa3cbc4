"""Typed data passing between steps: a serializer registry chosen by the value's type.

This module runs inside step kernels, so it imports only the standard library at module
level. numpy, pandas, pyarrow, scikit-learn and joblib are touched only when a value's type
module is already loaded (``sys.modules``), so a step that never imported pandas never pays
for it.

Layout: every saved variable gets its own directory holding ``meta.json`` plus the data
file(s). ``meta.json`` records the serializer, the value's type, a content digest and the
size. Two outputs of one step that are the same object are saved once; the second is an
``alias`` pointing at the first. Outputs that share inner objects (``d = {"x": a}``) are
pickled together in one ``group`` file so the sharing survives loading.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import io
import json
import os
import pickle
import shutil
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any

__all__ = [
    "DIGEST",
    "META",
    "Serializer",
    "UnserializableValue",
    "Unsupported",
    "load_value",
    "load_values",
    "register_serializer",
    "save_value",
    "save_values",
    "serializers",
    "value_dirname",
]

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
# Beyond this many visited objects the sharing scan gives up and assumes sharing.
_SCAN_BUDGET = 200_000


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


# ------------------------------------------------------------------------------------------
# Pickling that keeps notebook-defined classes and functions the consumer's own
# ------------------------------------------------------------------------------------------


def _main_lookup(qualname: str) -> Any:
    obj: Any = sys.modules.get("__main__")
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _code_fingerprint(obj: Any) -> str:
    """Identify a notebook function or class by its code, not just its name.

    A consumer may define another object under the same name (a Kale functions cell's
    ``h`` while the value holds a conditionally defined ``h``); only the same definition
    may stand in for the pickled one.
    """
    parts: list[str] = []

    def code(fn: types.FunctionType) -> None:
        c = fn.__code__
        parts.append(repr((c.co_code, c.co_names, c.co_varnames, c.co_argcount)))
        parts.extend(repr(k) for k in c.co_consts if not isinstance(k, types.CodeType))

    if isinstance(obj, types.FunctionType):
        code(obj)
    elif isinstance(obj, type):
        for name, attr in sorted(vars(obj).items()):
            is_function = isinstance(attr, types.FunctionType)
            if name.startswith("__") and not is_function:
                continue  # bookkeeping such as __slotnames__, which pickling itself adds
            parts.append(name)
            if is_function:
                code(attr)
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:16]


def _resolve_main(qualname: str, payload: bytes | None, fingerprint: str | None = None) -> Any:
    """Unpickle a ``__main__`` class/function: the consumer's own if it defines the same one."""
    obj = _main_lookup(qualname)
    if (
        obj is not None
        and isinstance(obj, (type, types.FunctionType))
        and (fingerprint is None or _code_fingerprint(obj) == fingerprint)
    ):
        return obj
    if payload is None:
        raise AttributeError(
            f"{qualname!r} is not defined in this step; define it before using the value"
        )
    import cloudpickle

    return _rebind_globals(cloudpickle.loads(payload))


def _rebind_globals(obj: Any) -> Any:
    """Give a by-value notebook function (or class's methods) the kernel's own globals.

    cloudpickle rebuilds a function with a private copy of the globals it referenced, frozen
    at pickling time. A function defined in a notebook reads the *current* globals when
    called, so a consumer must see its own values (e.g. a list changed by a later step).
    Globals the consumer does not define keep the producer's values: they are added to the
    kernel's namespace (where the notebook had them too) instead of raising NameError.
    """
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    if namespace is None:
        return obj

    def rebind(fn: types.FunctionType) -> types.FunctionType:
        for key, value in fn.__globals__.items():
            if not key.startswith("__"):
                namespace.setdefault(key, value)
        new = types.FunctionType(
            fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
        )
        new.__kwdefaults__ = fn.__kwdefaults__
        new.__dict__.update(fn.__dict__)
        new.__qualname__ = fn.__qualname__
        new.__module__ = fn.__module__
        new.__doc__ = fn.__doc__
        new.__annotations__ = fn.__annotations__
        return new

    if isinstance(obj, types.FunctionType):
        return rebind(obj)
    if isinstance(obj, type):
        for name, attr in list(vars(obj).items()):
            if isinstance(attr, types.FunctionType) and attr.__module__ == "__main__":
                setattr(obj, name, rebind(attr))
    return obj


def _main_reduce(obj: Any) -> Any:
    """Reduce a class/function defined in the notebook (``__main__``) to a by-name lookup.

    A consumer replays the notebook's ``def``/``class`` statements, so the loaded object
    must use *that* class (``isinstance`` keeps working, globals are the step's own). The
    by-value pickle travels too, for consumers that never define the name.
    """
    if (
        isinstance(obj, (type, types.FunctionType))
        and getattr(obj, "__module__", None) == "__main__"
        and "<" not in obj.__qualname__
        and _main_lookup(obj.__qualname__) is obj
    ):
        try:
            buf = io.BytesIO()
            # By value (that is the payload), its library bases by reference as anywhere.
            _cloudpickle_pickler(buf, check=False, main_by_name=False).dump(obj)
            payload: bytes | None = buf.getvalue()
        except Exception:
            payload = None
        return _resolve_main, (obj.__qualname__, payload, _code_fingerprint(obj))
    return NotImplemented


class ClassNotImportable(Exception):
    """A value's class would travel by value and load as a different, look-alike class."""


def _import_home(obj: Any) -> None:
    """Import the module a library class or function names as its home, if not loaded yet.

    cloudpickle copies a class *by value* when its ``__module__`` is not in ``sys.modules``.
    Some libraries name a submodule that is imported only on demand: with numpy 2,
    ``np.recarray.__module__`` is ``numpy.rec``. Copied by value, the class loads in the next
    step as a look-alike, and its own methods then fail (``super(type, obj): obj must be an
    instance or subtype of type``). Importing the module makes it travel by reference.
    """
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module != "__main__" and module not in sys.modules:
        # (not importable after all: the by-value check reports it)
        with contextlib.suppress(Exception):
            importlib.import_module(module)


def _by_value_allowed(cls: type) -> bool:
    """Only a class the notebook defined (or a module the user registered) may travel by value.

    A notebook class is re-created in the consumer by the definitions replay (or loaded by
    value where it is not); any other class copied by value is a different class there.
    """
    import cloudpickle

    module = getattr(cls, "__module__", None) or ""
    if module == "__main__":
        return True
    registered = cloudpickle.list_registry_pickle_by_value()
    return any(module == m or module.startswith(m + ".") for m in registered)


def _cloudpickle_pickler(f: Any, check: bool = True, main_by_name: bool = True) -> Any:
    """A cloudpickle pickler: notebook objects by name (``main_by_name``, see
    ``_main_reduce``), library classes by reference, and (``check``) a clear error for a
    class that cannot travel by reference."""
    import cloudpickle

    class _Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if main_by_name:
                rv = _main_reduce(obj)
                if rv is not NotImplemented:
                    return rv
            if isinstance(obj, (type, types.FunctionType)):
                _import_home(obj)
            rv = super().reducer_override(obj)
            if (
                check
                and isinstance(obj, type)
                and isinstance(rv, tuple)
                and getattr(rv[0], "__name__", "").startswith("_make_skeleton")
                and not _by_value_allowed(obj)
            ):
                raise ClassNotImportable(
                    f"its class {obj.__module__}.{obj.__qualname__} cannot be imported by that "
                    "name, so it would be copied and load as a different class in the next "
                    "step (isinstance checks and the class's own methods would break)"
                )
            return rv

    return _Pickler(f, protocol=5)


def _cloudpickle_dump(value: Any, f: Any) -> None:
    _cloudpickle_pickler(f).dump(value)


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


class NumpySerializer(Serializer):
    """Plain ``numpy.ndarray`` without Python objects → ``.npy`` (no pickle)."""

    name = "npy"

    def accepts(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        return np is not None and type(value) is np.ndarray and not value.dtype.hasobject

    def save(self, value: Any, directory: str) -> tuple[str, int, dict[str, Any]]:
        import numpy as np

        header = np.lib.format.header_data_from_array_1_0(value)
        data = value.T if header["fortran_order"] else np.ascontiguousarray(value)
        buf = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(buf, header)
        except ValueError:  # header too long for format 1.0
            buf = io.BytesIO()
            np.lib.format.write_array_header_2_0(buf, header)
        flat = data.reshape(-1).view(np.uint8) if data.size else b""
        digest, size = _write_hashed(os.path.join(directory, "value.npy"), [buf.getvalue(), flat])
        return digest, size, {"file": "value.npy"}

    def load(self, directory: str, meta: dict[str, Any]) -> Any:
        import numpy as np

        return np.load(os.path.join(directory, meta["file"]), allow_pickle=False)


def _object_column_ok(col: Any) -> bool:
    """True if an object column holds only str (or only bytes) and None: Arrow keeps those."""
    import pandas as pd

    kind = pd.api.types.infer_dtype(col, skipna=True)
    if kind not in ("string", "bytes", "empty"):
        return False
    nulls = col[col.isna()]
    return all(v is None for v in nulls)


_NAT = -(2**63)  # numpy's NaT as int64


def _column_to_arrow(values: Any, field_type: Any) -> Any:
    """Arrow array for one column or index level, equal to ``pa.array(values, type=field_type,
    from_pandas=True)`` (what ``Table.from_pandas`` does) but without its full scans.

    pyarrow looks for NaN/NaT in every float and datetime value, and checks every category
    code, even when there is nothing to find; a quick vectorised check lets the common case
    (no missing values) share the column's memory instead. Anything else takes pyarrow's own
    path.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    dtype = values.dtype
    result = None
    if isinstance(dtype, (np.dtype, pd.DatetimeTZDtype)):
        if isinstance(dtype, pd.DatetimeTZDtype):
            arr = np.asarray(values.array.tz_convert(None))  # the UTC instants, no copy
        else:
            arr = np.asarray(values)
        kind = arr.dtype.kind
        if kind in "iub" or (kind == "f" and not np.isnan(arr).any()):
            result = pa.array(arr, type=field_type, from_pandas=False)
        elif (
            kind in "mM"
            and arr.flags.c_contiguous
            and np.datetime_data(arr.dtype)[0] == getattr(field_type, "unit", None)
        ):
            ints = arr.view(np.int64)
            if not (ints == _NAT).any():
                result = pa.array(ints).view(field_type)
    elif isinstance(dtype, pd.CategoricalDtype) and pa.types.is_dictionary(field_type):
        codes = np.asarray(values.array.codes)
        missing = codes < 0
        dictionary = pa.array(values.array.categories, type=field_type.value_type, from_pandas=True)
        indices = pa.array(
            codes, type=field_type.index_type, mask=missing if missing.any() else None
        )
        result = pa.DictionaryArray.from_arrays(
            indices,
            dictionary,
            ordered=dtype.ordered,
            safe=False,  # pandas' codes are in range by construction
        )
    if result is None or result.type != field_type:
        result = pa.array(values, type=field_type, from_pandas=True)
    return result


def _frame_to_arrow(frame: Any) -> Any:
    """``pa.Table.from_pandas(frame)``, faster for frames without object columns.

    The schema and pandas metadata come from pyarrow itself, on the frame's first zero rows
    (only a RangeIndex's bounds depend on the rows; they are set from the frame), so the
    file is what ``Table.from_pandas`` would write; the columns go through
    :func:`_column_to_arrow`.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    index = frame.index
    levels = [index.get_level_values(i) for i in range(index.nlevels)]
    dtypes = [*(v.dtype for v in levels), *frame.dtypes]
    if any(isinstance(d, np.dtype) and d.kind == "O" for d in dtypes):
        return pa.Table.from_pandas(frame)  # an empty object column has no type to read
    schema = pa.Schema.from_pandas(frame.iloc[:0])
    pandas_meta = json.loads(schema.metadata[b"pandas"])
    descriptors = pandas_meta["index_columns"]
    if type(index) is pd.RangeIndex and descriptors and isinstance(descriptors[0], dict):
        descriptors[0].update(start=index.start, stop=index.stop, step=index.step)
        schema = schema.with_metadata(
            {**schema.metadata, b"pandas": json.dumps(pandas_meta).encode()}
        )
    columns = [frame.iloc[:, i] for i in range(frame.shape[1])]
    columns += [v for v, d in zip(levels, descriptors, strict=False) if isinstance(d, str)]
    if len(columns) != len(schema):
        return pa.Table.from_pandas(frame)
    arrays = [_column_to_arrow(v, f.type) for v, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _owned_columns(table: Any) -> Any:
    """Copy the columns ``to_pandas`` would leave pointing into ``table``'s memory.

    ``to_pandas`` copies numeric, boolean and datetime columns into numpy blocks, but keeps
    Arrow-backed ones (pandas' ``str``, ``ArrowDtype``), categorical codes and a numeric
    index as views. When the table is a memory-mapped file those views would read the file
    for as long as the frame lives: a file changed or truncated later (a copy over a hard
    link) would change the frame or crash the kernel. Copying just those columns (and every
    index column) keeps the frame independent; each byte is still copied only once.
    """
    import pyarrow as pa

    meta = table.schema.pandas_metadata or {}
    numpy_types = {c.get("field_name"): str(c.get("numpy_type")) for c in meta.get("columns", [])}
    index_columns = {d for d in meta.get("index_columns", []) if isinstance(d, str)}
    copied = False
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        t = field.type
        kept_by_pandas = (
            (
                pa.types.is_integer(t)
                or pa.types.is_floating(t)
                or pa.types.is_boolean(t)
                or pa.types.is_timestamp(t)
                or pa.types.is_duration(t)
            )
            and "[pyarrow]" not in numpy_types.get(field.name, "")
            and field.name not in index_columns  # an Index may be built on the data as is
        )
        if not kept_by_pandas and column.num_chunks:
            column = pa.chunked_array([pa.concat_arrays(column.chunks)], type=t)
            copied = True
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema) if copied else table


class PandasSerializer(Serializer):
    """pandas DataFrame/Series → Arrow (IPC file, default) or Parquet, only if exact.

    Arrow's IPC file format is the default: uncompressed it costs about what the raw bytes
    cost to write and read, while Parquet's encoding runs several times slower than this
    disk (see ``bench/serializers.py``). Both carry pandas' metadata and are readable by
    any Arrow tool. A frame whose Arrow round trip would change labels, dtypes or values
    is left to the pickle serializer.

    Args:
        fmt: ``"arrow"`` or ``"parquet"``.
    """

    _SERIES_COLUMN = "__jp_series__"

    def __init__(self, fmt: str = "arrow") -> None:
        if fmt not in ("arrow", "parquet"):
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.name = fmt

    def accepts(self, value: Any) -> bool:
        pd = sys.modules.get("pandas")
        return pd is not None and type(value) in (pd.DataFrame, pd.Series)

    def _frame(self, value: Any) -> tuple[Any, dict[str, Any]]:
        import pandas as pd

        if type(value) is pd.Series:
            if value.name is not None and not isinstance(value.name, str):
                raise Unsupported("series name")
            return value.to_frame(self._SERIES_COLUMN), {
                "kind": "series",
                "series_name": value.name,
            }
        return value, {"kind": "frame"}

    @staticmethod
    def _with_freq(frame: Any, meta: dict[str, Any]) -> Any:
        """Give a loaded frame's DatetimeIndex/TimedeltaIndex the freq it was saved with."""
        freq = meta.get("index_freq")
        if freq is not None:
            # The constructor checks the values conform to the freq (it raises otherwise).
            frame.index = type(frame.index)(frame.index, freq=freq)
        return frame

    def _check(self, frame: Any) -> None:
        import pandas as pd

        cols = frame.columns
        if type(cols) is not pd.Index or not all(isinstance(c, str) for c in cols):
            raise Unsupported("column labels")
        if not cols.is_unique or frame.attrs or frame.flags.allows_duplicate_labels is False:
            raise Unsupported("labels/attrs")
        for _, col in frame.items():
            if col.dtype == object and not _object_column_ok(col):
                raise Unsupported("object column")
        idx = frame.index
        if isinstance(idx, pd.MultiIndex):
            for level in range(idx.nlevels):
                values = idx.get_level_values(level)
                if values.dtype == object and not _object_column_ok(values.to_series()):
                    raise Unsupported("index level")
        elif idx.dtype == object and not _object_column_ok(idx.to_series()):
            raise Unsupported("object index")

    @staticmethod
    def _same(a: Any, b: Any) -> bool:
        """Strict comparison of labels and dtypes (values of a small sample too)."""
        if type(a.columns) is not type(b.columns) or a.columns.dtype != b.columns.dtype:
            return False
        if list(a.columns) != list(b.columns) or list(a.columns.names) != list(b.columns.names):
            return False
        if not a.dtypes.equals(b.dtypes):
            return False
        ia, ib = a.index, b.index
        if type(ia) is not type(ib) or ia.dtype != ib.dtype or list(ia.names) != list(ib.names):
            return False
        if getattr(ia, "freq", None) != getattr(ib, "freq", None):
            return False
        if hasattr(ia, "dtypes") and not ia.dtypes.equals(ib.dtypes):
            return False
        return bool(ia.equals(ib)) and bool(a.equals(b))

    def save(self, value: Any, directory: str) -> tuple[str, int, dict[str, Any]]:
        import pyarrow as pa

        try:
            frame, extra = self._frame(value)
            self._check(frame)
            table = _frame_to_arrow(frame)
            # Arrow has no place for a DatetimeIndex's freq (a date_range or resample
            # index): it goes in meta.json and is put back (and checked) on loading.
            freq = getattr(frame.index, "freq", None)
            if freq is not None:
                extra["index_freq"] = freq.freqstr
            # The first rows as a frame of their own (a slice of the table would keep the
            # whole frame's RangeIndex bounds, which pyarrow then drops).
            head = frame.iloc[:16]
            back = self._with_freq(_frame_to_arrow(head).to_pandas(), extra)
            same = self._same(head, back)
        except Unsupported:
            raise
        except Exception as exc:  # Arrow cannot hold it: pickle instead
            raise Unsupported(f"{type(exc).__name__}: {exc}") from exc
        if not same:
            raise Unsupported("round trip differs")
        file = f"value.{self.fmt}"
        # Straight from the table's buffers into the file, hashed on the way: no
        # intermediate copy of the whole file in memory.
        with _HashingFile(os.path.join(directory, file)) as f:
            sink = pa.PythonFile(f, mode="w")
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, sink, compression="none")
            else:
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
        extra["file"] = file
        return f.digest, f.size, extra

    def load(self, directory: str, meta: dict[str, Any]) -> Any:
        import pyarrow as pa

        path = os.path.join(directory, meta["file"])
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            frame = pq.read_table(path).to_pandas()
        else:
            # Mapped, not read: to_pandas copies the columns into pandas' blocks straight
            # from the page cache (one copy, as reading the file would be).
            try:
                source = pa.memory_map(path)
            except OSError:  # a file system that cannot map files (some FUSE mounts)
                source = pa.OSFile(path)
            with source:
                table = _owned_columns(pa.ipc.open_file(source).read_all())
            # One thread: no faster alone here, and the other cores run other steps.
            frame = table.to_pandas(use_threads=False)
        frame = self._with_freq(frame, meta)
        if meta.get("kind") == "series":
            series = frame[self._SERIES_COLUMN]
            series.name = meta.get("series_name")
            return series
        return frame


class SklearnSerializer(Serializer):
    """scikit-learn estimators → joblib (numpy arrays inside are stored efficiently)."""

    name = "joblib"

    def accepts(self, value: Any) -> bool:
        base = sys.modules.get("sklearn.base")
        return base is not None and isinstance(value, base.BaseEstimator)

    def save(self, value: Any, directory: str) -> tuple[str, int, dict[str, Any]]:
        from joblib.numpy_pickle import NumpyPickler

        class _Pickler(NumpyPickler):
            def reducer_override(self, obj: Any) -> Any:
                return _main_reduce(obj)

        path = os.path.join(directory, "value.joblib")
        try:
            with open(path, "wb") as f:
                _Pickler(f, protocol=5).dump(value)
        except Exception as exc:  # e.g. a lambda inside: cloudpickle can do it
            raise Unsupported(str(exc)) from exc
        digest, size = _hash_file(path)
        return digest, size, {"file": "value.joblib"}

    def load(self, directory: str, meta: dict[str, Any]) -> Any:
        import joblib

        return joblib.load(os.path.join(directory, meta["file"]))


class CloudpickleSerializer(Serializer):
    """Anything else → cloudpickle (protocol 5)."""

    name = "cloudpickle"

    def accepts(self, value: Any) -> bool:
        return True

    def save(self, value: Any, directory: str) -> tuple[str, int, dict[str, Any]]:
        path = os.path.join(directory, "value.pkl")
        with _HashingFile(path) as f:
            _cloudpickle_dump(value, io.BufferedWriter(f, buffer_size=1 << 20))
        return f.digest, f.size, {"file": "value.pkl"}

    def load(self, directory: str, meta: dict[str, Any]) -> Any:
        with open(os.path.join(directory, meta["file"]), "rb") as f:
            return pickle.load(f)


# The registry: first serializer that accepts (and does not raise Unsupported) wins.
serializers: list[Serializer] = [
    NumpySerializer(),
    PandasSerializer("arrow"),
    SklearnSerializer(),
    CloudpickleSerializer(),
]
_by_name: dict[str, Serializer] = {s.name: s for s in serializers}
_by_name["parquet"] = PandasSerializer("parquet")  # loads what a parquet-configured step saved


def register_serializer(serializer: Serializer, *, first: bool = True) -> None:
    """Add a serializer to the registry.

    Args:
        serializer: The serializer; its ``name`` is recorded in ``meta.json``.
        first: Try it before the built-in ones (default) rather than just before the
            cloudpickle catch-all.
    """
    serializers.insert(0 if first else len(serializers) - 1, serializer)
    _by_name[serializer.name] = serializer


def _fresh_dir(directory: str) -> None:
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    elif os.path.lexists(directory):
        os.remove(directory)
    os.makedirs(directory)


def _write_meta(directory: str, meta: dict[str, Any]) -> None:
    with open(os.path.join(directory, META), "w") as f:
        json.dump(meta, f)


def _unserializable(name: str, value: Any, exc: BaseException) -> UnserializableValue:
    if isinstance(exc, ClassNotImportable):
        return UnserializableValue(
            f"cannot pass variable {name!r} ({_type_name(value)}) to later steps: {exc}. "
            "Make the class importable (define it at the top level of a module), convert the "
            "value to a plain type, or tag these cells into one step."
        )
    return UnserializableValue(
        f"cannot pass variable {name!r} ({_type_name(value)}) to later steps: "
        f"{type(exc).__name__}: {exc}. Recompute it in the consuming step, "
        "or tag these cells into one step."
    )


def save_value(value: Any, directory: str, name: str = "value") -> dict[str, Any]:
    """Save one value into ``directory`` (replaced if it exists) with the first fitting serializer.

    Args:
        value: The object.
        directory: Its directory (created; an old one is removed first).
        name: Variable name, for ``meta.json`` and error messages.

    Returns:
        The ``meta.json`` content: name, serializer, type, digest, size, file.

    Raises:
        UnserializableValue: No serializer could save it.
    """
    _fresh_dir(directory)
    last: BaseException | None = None
    for serializer in serializers:
        if not serializer.accepts(value):
            continue
        try:
            digest, size, extra = serializer.save(value, directory)
        except Unsupported as exc:
            last = exc
            _fresh_dir(directory)
            continue
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise _unserializable(name, value, exc) from exc
        meta = {
            "name": name,
            "serializer": serializer.name,
            "type": _type_name(value),
            "digest": digest,
            "size": size,
            **extra,
        }
        _write_meta(directory, meta)
        return meta
    raise _unserializable(name, value, last or TypeError("no serializer"))  # pragma: no cover


# ------------------------------------------------------------------------------------------
# Several values of one step: aliases and shared internals
# ------------------------------------------------------------------------------------------

_ATOMIC = (str, bytes, int, float, complex, bool, type(None), range, slice)
_OPAQUE = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType, types.MethodType)


_LEAF = (types.FrameType, types.CodeType, types.GeneratorType, types.CoroutineType)


def _leaf_types() -> tuple[type, ...]:
    leaf: tuple[type, ...] = ()
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if np is not None:
        leaf += (np.ndarray, np.generic)
    if pd is not None:
        leaf += (pd.DataFrame, pd.Series, pd.Index)
    return leaf


def _reachable(value: Any, budget: list[int]) -> set[int] | None:
    """Ids of the objects reachable from ``value`` (None if the scan ran out of budget).

    Containers and instance ``__dict__``s are followed; arrays and frames are leaves
    (pickle copies them whole anyway); classes, functions and modules are skipped (they
    travel by reference).
    """
    seen: set[int] = set()
    stack = [value]
    leaf_types = _leaf_types()
    main_dict = getattr(sys.modules.get("__main__"), "__dict__", None)
    while stack:
        obj = stack.pop()
        if isinstance(obj, _ATOMIC + _OPAQUE):
            continue
        oid = id(obj)
        if oid in seen:
            continue
        seen.add(oid)
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if (
            (leaf_types and isinstance(obj, leaf_types))
            or isinstance(obj, _LEAF)
            or obj is main_dict
        ):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(r for r in gc.get_referents(obj) if not isinstance(r, type))
    return seen


def save_values(values: dict[str, Any], output_dir: str) -> dict[str, dict[str, Any]]:
    """Save several values of one step under ``output_dir/<name>/``, keeping their sharing.

    Identical objects are saved once (the others become ``alias`` entries); values that
    share inner objects are cloudpickled together (``group``), so loading them gives the
    same object graph.

    Args:
        values: Variable name → value.
        output_dir: Parent directory; each value gets ``value_dirname(name)`` inside it.

    Returns:
        Name → ``meta.json`` content, in the order of ``values``.

    Raises:
        UnserializableValue: A value cannot be saved (message names it).
    """
    os.makedirs(output_dir, exist_ok=True)
    metas: dict[str, dict[str, Any]] = {}
    first_by_id: dict[int, str] = {}
    unique: list[str] = []
    for name, value in values.items():
        if id(value) in first_by_id:
            continue
        first_by_id[id(value)] = name
        unique.append(name)

    # numpy views of another output array are saved as a view spec into that array, so
    # writes through one show in the other after loading, as in the notebook.
    views = _find_views({n: values[n] for n in unique})
    unique = [n for n in unique if n not in views]

    # Union-find over the unique values by shared reachable objects.
    parent = {n: n for n in unique}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    owner: dict[int, str] = {}
    budget = [_SCAN_BUDGET]
    unknown: list[str] = []
    for name in unique:
        value = values[name]
        if isinstance(value, _ATOMIC):
            continue
        reach = _reachable(value, budget)
        if reach is None:
            unknown.append(name)
            continue
        for oid in reach:
            other = owner.setdefault(oid, name)
            if other != name:
                parent[find(name)] = find(other)
    # Values too big to scan might share with anything that is not a plain leaf (an array
    # or frame is a leaf: it could only be shared by being inside the unscanned value).
    if unknown:
        leaf_types = _leaf_types()
        for name in unique:
            value = values[name]
            if name != unknown[0] and not isinstance(value, _ATOMIC + leaf_types):
                parent[find(name)] = find(unknown[0])

    groups: dict[str, list[str]] = {}
    for name in unique:
        groups.setdefault(find(name), []).append(name)

    for members in groups.values():
        if len(members) == 1:
            name = members[0]
            metas[name] = save_value(
                values[name], os.path.join(output_dir, value_dirname(name)), name
            )
            continue
        head = members[0]
        head_dir = os.path.join(output_dir, value_dirname(head))
        _fresh_dir(head_dir)
        f = _HashingFile(os.path.join(head_dir, "group.pkl"))
        try:
            _cloudpickle_dump({m: values[m] for m in members}, io.BufferedWriter(f, 1 << 20))
        except Exception:
            f.close()
            shutil.rmtree(head_dir, ignore_errors=True)
            for m in members:  # name the culprit
                try:
                    _cloudpickle_dump(values[m], io.BytesIO())
                except Exception as exc:
                    raise _unserializable(m, values[m], exc) from exc
            raise
        f.close()
        for m in members:
            directory = os.path.join(output_dir, value_dirname(m))
            if m != head:
                _fresh_dir(directory)
            meta = {
                "name": m,
                "serializer": "group",
                "type": _type_name(values[m]),
                "digest": _sub_digest(f.digest, m),
                "size": f.size,
                "group": value_dirname(head),
                "file": "group.pkl",
                "key": m,
            }
            _write_meta(directory, meta)
            metas[m] = meta

    def alias(name: str, target: str, **extra: Any) -> None:
        """Save ``name`` as an alias of ``target``, whose meta it copies (readers follow it)."""
        directory = os.path.join(output_dir, value_dirname(name))
        _fresh_dir(directory)
        meta = {**metas[target], "name": name, "serializer": "alias"}
        # Another name for a view is that same object: the target rebuilds the view, and
        # its spec (an offset into the base) means nothing applied to the view itself.
        meta.pop("view", None)
        meta.update(target=value_dirname(target), **extra)
        _write_meta(directory, meta)
        metas[name] = meta

    for name, (base, spec) in views.items():
        if metas[base]["serializer"] != "npy":  # the base went into a pickle: save a copy
            directory = os.path.join(output_dir, value_dirname(name))
            metas[name] = save_value(values[name], directory, name)
        else:  # an alias of part of the base
            digest = _sub_digest(metas[base]["digest"], json.dumps(spec, sort_keys=True))
            alias(name, base, view=spec, digest=digest)

    for name, value in values.items():
        target = first_by_id[id(value)]
        if target != name:
            alias(name, target)
    return {name: metas[name] for name in values}


def _rebuild_view(base: Any, spec: dict[str, Any]) -> Any:
    import numpy as np

    return np.ndarray(
        tuple(spec["shape"]),
        dtype=np.dtype(spec["dtype"]),
        buffer=base,
        offset=spec["offset"],
        strides=tuple(spec["strides"]),
    )


def _view_spec(value: Any, base: Any) -> dict[str, Any] | None:
    """How to rebuild ``value`` from ``base``'s buffer, if numpy can do it exactly."""
    spec = {
        "offset": value.__array_interface__["data"][0] - base.__array_interface__["data"][0],
        "shape": list(value.shape),
        "strides": list(value.strides),
        "dtype": value.dtype.str,
    }
    if spec["offset"] < 0:
        return None
    try:
        rebuilt = _rebuild_view(base, spec)
    except Exception:  # outside the base's buffer, or numpy refuses the strides
        return None
    return spec if rebuilt.__array_interface__ == value.__array_interface__ else None


def _find_views(values: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Output arrays that are views into another output array: name → (base name, spec).

    Arrays over the same memory (same numpy owner) are taken largest first; each becomes a
    view of an earlier, C-contiguous one if it lies inside it, else is saved on its own.
    """
    np = sys.modules.get("numpy")
    if np is None:
        return {}
    by_owner: dict[int, list[str]] = {}
    for name, value in values.items():
        if type(value) is np.ndarray and not value.dtype.hasobject:
            owner = value.base if value.base is not None else value
            by_owner.setdefault(id(owner), []).append(name)
    views: dict[str, tuple[str, dict[str, Any]]] = {}
    for names in by_owner.values():
        if len(names) < 2:
            continue
        roots: list[str] = []
        for name in sorted(names, key=lambda n: -values[n].nbytes):
            value = values[name]
            simple = value.dtype.names is None and value.dtype.subdtype is None
            for root in roots if simple else []:
                spec = _view_spec(value, values[root])
                if spec is not None:
                    views[name] = (root, spec)
                    break
            else:
                if value.flags.c_contiguous:
                    roots.append(name)
    return views


def _sub_digest(digest: str, key: str) -> str:
    h = _new_hash()
    h.update(f"{digest}\0{key}".encode())
    return f"{DIGEST}:{h.hexdigest()}"


def _read_meta(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, META)) as f:
        return json.load(f)


def load_value(directory: str, _cache: dict[str, Any] | None = None) -> Any:
    """Load a value saved by :func:`save_value` or :func:`save_values`.

    Args:
        directory: The value's directory.
        _cache: Shared cache (file path → loaded object) so aliases and group members
            loaded together come back as the same objects.
    """
    cache = {} if _cache is None else _cache
    directory = os.path.realpath(directory)
    meta = _read_meta(directory)
    kind = meta["serializer"]
    if kind == "alias":
        target = load_value(os.path.join(os.path.dirname(directory), meta["target"]), cache)
        if "view" not in meta:
            return target
        key = directory + "#view"
        if key not in cache:
            cache[key] = _rebuild_view(target, meta["view"])
        return cache[key]
    if kind == "group":
        group_dir = os.path.join(os.path.dirname(directory), meta["group"])
        path = os.path.join(group_dir, meta["file"])
        if path not in cache:
            with open(path, "rb") as f:
                cache[path] = pickle.load(f)
        return cache[path][meta["key"]]
    path = os.path.join(directory, meta.get("file", ""))
    if path not in cache:
        serializer = _by_name.get(kind)
        if serializer is None:
            raise ValueError(f"{directory}: unknown serializer {kind!r}")
        cache[path] = serializer.load(directory, meta)
    return cache[path]


def load_values(paths: dict[str, str]) -> dict[str, Any]:
    """Load several values (name → directory) so shared objects stay shared."""
    cache: dict[str, Any] = {}
    return {name: load_value(directory, cache) for name, directory in paths.items()}


def describe(directory: str) -> dict[str, Any]:
    """Return the ``meta.json`` of a saved value."""
    return _read_meta(directory)
