"""The other built-in serializers: numpy arrays, scikit-learn estimators, cloudpickle.

Each one touches its library only when the value's type module is already loaded
(``sys.modules``); cloudpickle is the catch-all, last in the registry.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from typing import Any

from jupyter_pipeline.runtime.serializers.base import (
    Serializer,
    Unsupported,
    _hash_file,
    _HashingFile,
    _write_hashed,
)
from jupyter_pipeline.runtime.serializers.pickling import _cloudpickle_dump, _main_reduce


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
