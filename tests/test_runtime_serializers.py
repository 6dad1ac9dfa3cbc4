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
