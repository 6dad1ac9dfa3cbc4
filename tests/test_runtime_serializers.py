"""Serializer registry: each type round-trips, sharing survives, failures name the variable."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from jupyter_pipeline.runtime import load_value, load_values, save_value, save_values
from jupyter_pipeline.runtime.serializers import UnserializableValue, value_dirname


def roundtrip(value, tmp_path, name="v"):
    meta = save_value(value, str(tmp_path / name), name)
    assert json.loads((tmp_path / name / "meta.json").read_text())["digest"] == meta["digest"]
    return meta, load_value(str(tmp_path / name))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(12).reshape(3, 4)),
        np.arange(20)[::3],  # not contiguous
        np.array(3.5),
        np.zeros((0, 3), dtype=np.int8),
        np.array([("a", 1.5)], dtype=[("k", "U3"), ("v", "f4")]),
        np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
    ],
)
def test_numpy_arrays_use_npy(array, tmp_path):
    meta, back = roundtrip(array, tmp_path)
    assert meta["serializer"] == "npy"
    assert (tmp_path / "v" / "value.npy").exists()
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert back.flags.f_contiguous


def test_object_arrays_are_pickled(tmp_path):
    array = np.array([1, "a", None], dtype=object)
    meta, back = roundtrip(array, tmp_path)
    assert meta["serializer"] == "cloudpickle"
    assert list(back) == [1, "a", None]


def test_digest_depends_on_content(tmp_path):
    a = save_value(np.arange(5), str(tmp_path / "a"))
    b = save_value(np.arange(5), str(tmp_path / "b"))
    c = save_value(np.arange(1, 6), str(tmp_path / "c"))
    assert a["digest"] == b["digest"] != c["digest"]
    assert a["size"] == (tmp_path / "a" / "value.npy").stat().st_size


def test_dataframe_arrow_roundtrip(tmp_path):
    df = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "f": [0.5, np.nan, 2.0],
            "s": ["a", None, "c"],
            "c": pd.Categorical(["u", "v", "u"]),
            "t": pd.date_range("2024-01-01", periods=3, freq="D"),
            "n": pd.array([1, None, 3], dtype="Int64"),
        },
        index=pd.Index([10, 20, 30], name="key"),
    )
    meta, back = roundtrip(df, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_frame_equal(back, df)


def test_series_arrow_roundtrip(tmp_path):
    s = pd.Series([1.5, 2.5], index=["x", "y"], name="price")
    meta, back = roundtrip(s, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_series_equal(back, s)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({0: [1, 2], 1: [3.0, 4.0]}),  # non-str column labels
        pd.DataFrame({"m": [1, "a", 2.5]}),  # object column of mixed types
        pd.DataFrame({"s": ["a", np.nan]}, dtype=object),  # NaN would come back as None
        pd.DataFrame([[1, 2]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])),
        pd.DataFrame({"l": [[1, 2], [3]]}),  # lists would come back as arrays
    ],
)
def test_dataframe_fallback_is_exact(frame, tmp_path):
    meta, back = roundtrip(frame, tmp_path)
    assert meta["serializer"] == "cloudpickle"
    pd.testing.assert_frame_equal(back, frame)
    assert back.columns.dtype == frame.columns.dtype


def test_frame_with_attrs_falls_back(tmp_path):
    df = pd.DataFrame({"a": [1]})
    df.attrs["unit"] = "m"
    meta, back = roundtrip(df, tmp_path)
    assert meta["serializer"] == "cloudpickle" and back.attrs == {"unit": "m"}


def test_sklearn_estimator_uses_joblib(tmp_path):
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    est = LogisticRegression().fit(x, [0, 0, 1, 1])
    meta, back = roundtrip(est, tmp_path)
    assert meta["serializer"] == "joblib"
    assert type(back) is LogisticRegression
    assert np.array_equal(back.predict_proba(x), est.predict_proba(x))


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def test_generic_object_uses_cloudpickle(tmp_path):
    value = {"p": Point(1, 2), "f": lambda v: v + 1, "s": {1, 2}}
    meta, back = roundtrip(value, tmp_path)
    assert meta["serializer"] == "cloudpickle"
    assert (back["p"].x, back["p"].y, back["f"](1), back["s"]) == (1, 2, 2, {1, 2})


def test_aliases_and_shared_objects_survive(tmp_path):
    a = [1, 2]
    arr = np.arange(3)
    values = {"a": a, "b": a, "d": {"inner": a}, "arr": arr, "arr2": arr, "x": 5, "other": [9]}
    metas = save_values(values, str(tmp_path))
    assert metas["b"]["serializer"] == "alias" and metas["b"]["target"] == "a"
    assert metas["arr"]["serializer"] == "npy" and metas["arr2"]["serializer"] == "alias"
    assert metas["a"]["serializer"] == metas["d"]["serializer"] == "group"
    assert metas["other"]["serializer"] == "cloudpickle"
    assert metas["b"]["digest"] == metas["a"]["digest"] != metas["d"]["digest"]

    back = load_values({k: str(tmp_path / value_dirname(k)) for k in values})
    assert back["a"] is back["b"] is back["d"]["inner"]
    assert back["arr"] is back["arr2"]
    back["b"].append(3)
    assert back["a"] == [1, 2, 3]
    # A consumer reading only the alias still gets the value.
    assert load_value(str(tmp_path / "b")) == [1, 2]


def test_state_names_get_safe_directories(tmp_path):
    metas = save_values({"__state__:numpy.random": np.random.get_state()}, str(tmp_path))
    assert (tmp_path / value_dirname("__state__:numpy.random") / "meta.json").exists()
    assert ":" not in value_dirname("__state__:numpy.random")
    assert metas["__state__:numpy.random"]["serializer"] == "cloudpickle"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [((i for i in range(3)), "generator"), (threading.Lock(), "_thread.lock")],
)
def test_unserializable_names_variable_type_and_fix(value, type_name, tmp_path):
    with pytest.raises(UnserializableValue) as info:
        save_values({"ok": [1], "bad": value}, str(tmp_path))
    message = str(info.value)
    assert "'bad'" in message and type_name in message
    assert "recompute it in the consuming step" in message.lower()
    assert "one step" in message


def test_unserializable_inside_shared_group_names_the_culprit(tmp_path):
    shared = [1]
    values = {"fine": shared, "holder": {"s": shared, "lock": threading.Lock()}}
    with pytest.raises(UnserializableValue, match="'holder' \\(dict\\)"):
        save_values(values, str(tmp_path))


def test_parquet_format_is_available(tmp_path):
    from jupyter_pipeline.runtime.serializers import PandasSerializer

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    directory = tmp_path / "v"
    directory.mkdir()
    serializer = PandasSerializer("parquet")
    digest, size, extra = serializer.save(df, str(directory))
    (directory / "meta.json").write_text(
        json.dumps({"serializer": "parquet", "digest": digest, "size": size, **extra})
    )
    pd.testing.assert_frame_equal(load_value(str(directory)), df)


def test_notebook_classes_resolve_to_consumers_definition(tmp_path, monkeypatch):
    import sys

    main = sys.modules["__main__"]

    class Box:
        def __init__(self, v):
            self.v = v

    Box.__module__, Box.__qualname__ = "__main__", "Box"
    monkeypatch.setattr(main, "Box", Box, raising=False)
    save_value({"box": Box([1])}, str(tmp_path / "v"), "v")

    # The consumer replayed `class Box`: the loaded object is an instance of *that* class.
    class Box2:
        def __init__(self, v):
            self.v = v

    Box2.__module__, Box2.__qualname__ = "__main__", "Box"
    monkeypatch.setattr(main, "Box", Box2)
    assert type(load_value(str(tmp_path / "v"))["box"]) is Box2

    # Another class under the same name is not the same definition: the value's own travels.
    class Other:
        def __init__(self):
            self.w = 0

    Other.__module__, Other.__qualname__ = "__main__", "Box"
    monkeypatch.setattr(main, "Box", Other)
    other = load_value(str(tmp_path / "v"))["box"]
    assert type(other) is not Other and other.v == [1]

    # A consumer that never defines Box still gets a working object (by value).
    monkeypatch.delattr(main, "Box")
    back = load_value(str(tmp_path / "v"))["box"]
    assert type(back).__name__ == "Box" and back.v == [1]


def test_loaded_frames_and_arrays_are_writable(tmp_path):
    frame = pd.DataFrame({"x": np.arange(4.0), "i": np.arange(4), "s": list("abcd")})
    _, back = roundtrip(frame, tmp_path, "f")
    back.loc[0, "x"] = 9.0  # a zero-copy (read-only) Arrow view would raise here
    back["i"] += 1
    assert back["x"].tolist() == [9.0, 1.0, 2.0, 3.0] and back["i"].tolist() == [1, 2, 3, 4]
    _, arr = roundtrip(np.arange(3), tmp_path, "a")
    arr[0] = 7
    assert arr.tolist() == [7, 1, 2]


def test_numpy_views_of_another_output_stay_views(tmp_path):
    data = np.arange(24.0).reshape(4, 6)  # itself a view of arange's buffer
    values = {
        "data": data,
        "X": data[:, :4],
        "y": data[:, 5],
        "rev": data[::-1],
        "ints": data.view(np.int64)[1:],
        "alone": np.arange(3)[1:],
    }
    metas = save_values(values, str(tmp_path))
    assert metas["data"]["serializer"] == "npy" and metas["alone"]["serializer"] == "npy"
    for name in ("X", "y", "rev", "ints"):
        assert metas[name]["serializer"] == "alias" and metas[name]["target"] == "data"
        assert "view" in metas[name]
    back = load_values({k: str(tmp_path / k) for k in values})
    for name, value in values.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value), name
    back["data"][0, 5] = -1.0  # a write through one shows in the others, as in the notebook
    assert back["y"][0] == -1.0 and back["rev"][-1, 5] == -1.0
    back["X"][1, 0] = -2.0
    assert back["data"][1, 0] == -2.0
    # a consumer reading only a view still gets it (the base comes along)
    assert np.array_equal(load_value(str(tmp_path / "y")), data[:, 5])


def test_second_name_for_a_view_loads_as_the_same_view(tmp_path):
    data = np.arange(24.0).reshape(4, 6)
    values = {"data": data, "X": data[:, 2:], "X2": None}
    values["X2"] = values["X"]  # X2 = X in the notebook
    save_values(values, str(tmp_path))
    back = load_values({k: str(tmp_path / k) for k in values})
    assert back["X2"] is back["X"] and np.array_equal(back["X"], data[:, 2:])
    back["data"][0, 2] = -1.0
    assert back["X2"][0, 0] == -1.0


def test_by_value_notebook_function_reads_consumer_globals(tmp_path, monkeypatch):
    import sys

    main = sys.modules["__main__"]
    producer = {"__name__": "__main__", "SCALE": 3, "SEEN": [1, 2]}
    exec("def f(x):\n    return x * SCALE + len(SEEN)", producer)
    monkeypatch.setattr(main, "f", producer["f"], raising=False)
    save_value({"fn": producer["f"]}, str(tmp_path / "v"), "v")

    # Consumer: does not define f, has its own SCALE, never heard of SEEN.
    monkeypatch.delattr(main, "f")
    monkeypatch.setattr(main, "SCALE", 10, raising=False)
    monkeypatch.delattr(main, "SEEN", raising=False)
    fn = load_value(str(tmp_path / "v"))["fn"]
    try:
        assert fn(1) == 10 + 2  # its own SCALE, the producer's SEEN
        main.SCALE = 100
        assert fn(1) == 100 + 2  # read when called, as in the notebook
    finally:
        monkeypatch.delattr(main, "SEEN", raising=False)


def _many_dtypes(rows=40):
    rng = np.random.default_rng(3)
    with_nan = rng.random(rows)
    with_nan[::7] = np.nan
    when = pd.Series(pd.date_range("2024-03-30", periods=rows, freq="h", tz="Europe/Paris"))
    when[5] = pd.NaT
    return pd.DataFrame(
        {
            "i8": np.arange(rows, dtype=np.int8),
            "u64": np.arange(rows, dtype=np.uint64) * 2**40,
            "f": rng.random(rows),
            "f_nan": with_nan,
            "f32": rng.random(rows).astype(np.float32),
            "f16": np.arange(rows, dtype=np.float16),
            "b": rng.random(rows) > 0.5,
            "s": pd.Series([None if i % 6 == 0 else f"s{i}" for i in range(rows)], dtype="str"),
            "cat": pd.Categorical(["lo", "hi", None, "mid"] * (rows // 4)),
            "cat_ord": pd.Categorical(
                [3, 1, 2, 1] * (rows // 4), categories=[3, 2, 1], ordered=True
            ),
            "t": pd.date_range("2020-01-01", periods=rows, freq="s"),
            "t_nat": pd.to_datetime(
                [None if i == 3 else f"2021-01-{1 + i % 28}" for i in range(rows)]
            ),
            "t_ns": pd.date_range("2020-01-01", periods=rows, freq="ns"),
            "tz": when,
            "tz_utc": pd.date_range("2020-01-01", periods=rows, freq="D", tz="UTC"),
            "td": pd.to_timedelta(np.arange(rows), unit="ms"),
            "I": pd.array([None if i % 4 == 0 else i for i in range(rows)], dtype="Int64"),
            "F": pd.array([None if i % 3 == 0 else i / 2 for i in range(rows)], dtype="Float64"),
            "B": pd.array(
                [None if i % 3 == 0 else i % 2 == 0 for i in range(rows)], dtype="boolean"
            ),
            "ap": pd.array(list(range(rows)), dtype="int64[pyarrow]"),
        }
    )


@pytest.mark.parametrize(
    "index",
    [
        None,
        pd.RangeIndex(7, 7 + 3 * 40, 3, name="r"),
        pd.Index([f"k{i}" for i in range(40)], dtype="str", name="key"),
        pd.date_range("2020", periods=40, freq="D", tz="US/Eastern", name="day").as_unit("s")[
            np.arange(40)  # no freq: pyarrow does not keep one
        ],
        pd.CategoricalIndex(list("abcd") * 10, name="grp"),
        pd.MultiIndex.from_arrays(
            [np.repeat([1, 2], 20), pd.Index([f"x{i}" for i in range(40)], dtype="str")],
            names=["outer", None],
        ),
    ],
    ids=["default", "range", "str", "datetime_tz", "categorical", "multi"],
)
def test_dataframe_arrow_roundtrip_is_exact_across_dtypes(index, tmp_path):
    frame = _many_dtypes()
    if index is not None:
        frame.index = index
    frame.columns.name = "fields"
    meta, back = roundtrip(frame, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_frame_equal(back, frame, check_exact=True, check_freq=False)
    assert back.columns.name == "fields" and list(back.index.names) == list(frame.index.names)
    assert back.dtypes.equals(frame.dtypes)
    assert meta["size"] == (tmp_path / "v" / meta["file"]).stat().st_size


def test_arrow_file_is_what_pyarrow_writes(tmp_path):
    """The fast conversion writes the table pyarrow's own from_pandas would (metadata too)."""
    import pyarrow as pa

    frame = _many_dtypes()
    frame.index = pd.RangeIndex(5, 5 + 2 * 40, 2, name="n")
    meta = save_value(frame, str(tmp_path / "v"))
    with pa.memory_map(str(tmp_path / "v" / meta["file"])) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.equals(pa.Table.from_pandas(frame), check_metadata=True)


def test_arrow_digest_is_the_files_digest(tmp_path):
    from jupyter_pipeline.runtime.serializers import DIGEST, _hash_file

    frame = _many_dtypes(400)
    meta = save_value(frame, str(tmp_path / "v"))
    assert meta["digest"].startswith(f"{DIGEST}:")
    assert (meta["digest"], meta["size"]) == _hash_file(str(tmp_path / "v" / meta["file"]))
    changed = frame.copy()
    changed.loc[399, "f"] = -1.0
    assert save_value(changed, str(tmp_path / "w"))["digest"] != meta["digest"]


@pytest.mark.parametrize(
    "index",
    [
        pd.Index([f"k{i}" for i in range(40)], dtype="str", name="key"),
        pd.Index(np.arange(40) * 7, name="n"),
        pd.MultiIndex.from_arrays(
            [pd.date_range("2020", periods=40, freq="h")[np.arange(40)], np.arange(40.0)]
        ),
    ],
    ids=["str", "int", "multi"],
)
def test_loaded_frame_does_not_depend_on_the_file(index, tmp_path):
    """Loading maps the file; nothing of the frame may keep reading it afterwards."""
    frame = _many_dtypes()
    frame.index = index
    meta, back = roundtrip(frame, tmp_path)
    path = tmp_path / "v" / meta["file"]
    size = path.stat().st_size
    with open(path, "r+b") as f:  # in place, as a copy over a hard link would
        f.write(b"\xff" * size)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    with open(path, "r+b") as f:
        f.truncate(0)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    back.iloc[0, back.columns.get_loc("f")] = 9.0  # and it is writable
    back.iloc[1, back.columns.get_loc("s")] = "new"
    assert back["f"].iloc[0] == 9.0 and back["s"].iloc[1] == "new"


def test_series_with_index_roundtrips_through_arrow(tmp_path):
    s = pd.Series(
        pd.Categorical(["a", None, "b"]),
        index=pd.DatetimeIndex(["2020-01-01", "2020-01-03", None], tz="UTC", name="t"),
        name="label",
    )
    meta, back = roundtrip(s, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_series_equal(back, s, check_freq=False)


def test_frame_aliases_load_as_one_frame(tmp_path):
    frame = _many_dtypes()
    values = {"df": frame, "same": frame, "col": frame["f"]}
    metas = save_values(values, str(tmp_path))
    assert metas["df"]["serializer"] == "arrow" and metas["same"]["serializer"] == "alias"
    back = load_values({k: str(tmp_path / k) for k in values})
    assert back["df"] is back["same"]
    pd.testing.assert_frame_equal(back["df"], frame, check_exact=True)
    pd.testing.assert_series_equal(back["col"], frame["f"], check_exact=True)


def test_object_string_column_keeps_object_dtype(tmp_path):
    """pandas 3 reads Arrow strings back as ``str``: an object column must not become one."""
    frame = pd.DataFrame({"o": pd.Series(["a", None, "c"], dtype=object), "x": [1, 2, 3]})
    _, back = roundtrip(frame, tmp_path)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back["o"].dtype == object


@pytest.mark.parametrize(
    "index",
    [
        pd.date_range("2024-01-01", periods=30, freq="D", tz="Europe/Paris", name="day"),
        pd.date_range("2024-01-31", periods=30, freq="BME"),
        pd.timedelta_range("1s", periods=30, freq="15min"),
    ],
)
def test_index_freq_survives_arrow(index, tmp_path):
    frame = pd.DataFrame({"v": np.arange(30.0), "s": pd.array(list("ab") * 15, dtype="str")})
    frame.index = index
    meta, back = roundtrip(frame, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back.index.freq == frame.index.freq
    series_meta, series = roundtrip(frame["v"], tmp_path, "s")
    assert series_meta["serializer"] == "arrow" and series.index.freq == frame.index.freq


def test_frame_of_several_arrow_chunks_roundtrips(tmp_path):
    """pd.concat leaves Arrow-backed columns in chunks: the file then holds several batches."""
    part = _many_dtypes(20)
    frame = pd.concat([part, part.iloc[::-1], part], ignore_index=True)
    meta, back = roundtrip(frame, tmp_path)
    assert meta["serializer"] == "arrow"
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


def test_arrow_load_reads_the_file_where_it_cannot_be_mapped(tmp_path, monkeypatch):
    import pyarrow as pa

    frame = _many_dtypes()
    save_value(frame, str(tmp_path / "v"))

    def refuse(*args, **kwargs):
        raise OSError("mmap not supported")

    monkeypatch.setattr(pa, "memory_map", refuse)
    pd.testing.assert_frame_equal(load_value(str(tmp_path / "v")), frame, check_exact=True)
