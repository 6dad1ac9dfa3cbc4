"""pandas DataFrames and Series through Arrow IPC (or parquet), without pickle.

Object columns that Arrow keeps exactly (only str, or only bytes, and None) are converted
without copying what can be shared; a frame Arrow would change (mixed objects, a lossy
dtype) raises :class:`~.base.Unsupported` and goes to the next serializer.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jupyter_pipeline.runtime.serializers.base import (
    Serializer,
    Unsupported,
    _HashingFile,
)


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
