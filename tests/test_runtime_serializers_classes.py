"""Library values that are not arrays or frames keep their class between steps.

Each group is saved in a fresh interpreter that imported only its library (as a step's
kernel does: numpy 2 imports ``numpy.rec`` only on demand, so ``np.recarray``'s home module
is not loaded there) and loaded in another fresh interpreter. A loaded value must be of the
very class the library exports (travelled by reference, not a by-value look-alike) and behave
as the original did. A class that cannot travel by reference is refused at save time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jupyter_pipeline.runtime import save_value, save_values
from jupyter_pipeline.runtime.serializers import UnserializableValue

ROOT = Path(__file__).resolve().parent.parent

# group → (imports, {name: (value expression, behaviour expression over v)})
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "numpy": (
        "import numpy as np",
        {
            "recarray": (
                "np.zeros(2, dtype=[('age', 'i4'), ('w', 'f8')]).view(np.recarray)",
                "(v['age'] + 1).tolist(), v.w.tolist(), v[0].age",
            ),
            "record": ("np.rec.array([(1, 2.5)], dtype=[('a', 'i4'), ('b', 'f8')])[0]", "v.b"),
            "masked": (
                "np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])",
                "int(v.sum()), v.mask.tolist()",
            ),
            "structured_dtype": ("np.dtype([('a', 'i4'), ('b', 'U3')])", "v.names, str(v)"),
            "dtype": ("np.dtype('float32')", "str(v), v.itemsize"),
            "matrix": ("np.matrix([[1, 2], [3, 4]])", "(v * v).tolist()"),
            "polynomial": (
                "np.polynomial.Polynomial([1, 2, 3])",
                "v(2.0), v.deriv().coef.tolist()",
            ),
            "random_state": ("np.random.RandomState(0)", "v.randint(0, 100, 3).tolist()"),
            "generator": ("np.random.default_rng(0)", "v.integers(0, 100, 3).tolist()"),
            "datetime64": ("np.datetime64('2024-01-31')", "str(v + np.timedelta64(1, 'D'))"),
        },
    ),
    "pandas": (
        "import pandas as pd",
        {
            "period": ("pd.Period('2024-01', freq='M')", "str(v + 1), v.days_in_month"),
            "timestamp": ("pd.Timestamp('2024-03-10 12:00', tz='Europe/Paris')", "v.isoformat()"),
            "timedelta": ("pd.Timedelta('1D2h')", "v.total_seconds()"),
            "interval": ("pd.Interval(0, 1, closed='left')", "0 in v, 1 in v"),
            "categorical": ("pd.Categorical(['a', 'b', 'a'])", "v.codes.tolist()"),
            "category_dtype": ("pd.CategoricalDtype(['lo', 'hi'], ordered=True)", "str(v)"),
            "offset": ("pd.offsets.MonthEnd(2)", "str(pd.Timestamp('2024-01-15') + v)"),
            "sparse": ("pd.arrays.SparseArray([0, 0, 3])", "v.density, v.sum()"),
        },
    ),
    "sklearn": (
        "import numpy as np\n"
        "from sklearn.pipeline import make_pipeline\n"
        "from sklearn.preprocessing import FunctionTransformer, LabelEncoder, StandardScaler\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.model_selection import KFold\n"
        "X = np.arange(40.0).reshape(20, 2); y = (X[:, 0] > 18).astype(int)",
        {
            "pipeline": (
                "make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),"
                " LogisticRegression()).fit(X, y)",
                "v.predict(X).tolist(), [type(s).__name__ for s in v]",
            ),
            "label_encoder": ("LabelEncoder().fit(['b', 'a', 'b'])", "v.transform(['a']).tolist()"),
            "kfold": ("KFold(3)", "[t.tolist() for t, _ in v.split(list(range(6)))]"),
        },
    ),
}

_SAVE = """
import json, sys
{imports}
from jupyter_pipeline.runtime import save_values
assert "numpy.rec" not in sys.modules or {group!r} != "numpy"  # as in a fresh step kernel
cases = {cases!r}
values = {{name: eval(expr) for name, (expr, _) in cases.items()}}
save_values(values, sys.argv[1])  # first: a check may change its value (an RNG draws)
facts = {{}}
for name, (_, check) in cases.items():
    v = values[name]
    facts[name] = [type(v).__module__, type(v).__qualname__, repr(eval(check))]
print(json.dumps(facts))
"""

_LOAD = """
import importlib, json, sys
{imports}
from jupyter_pipeline.runtime import load_value
cases = {cases!r}
out = {{}}
for name, (_, check) in cases.items():
    v = load_value(sys.argv[1] + "/" + name)
    cls = type(v)
    home = importlib.import_module(cls.__module__)
    for part in cls.__qualname__.split("."):
        home = getattr(home, part)
    out[name] = [cls.__module__, cls.__qualname__, repr(eval(check)), home is cls]
print(json.dumps(out))
"""


def _python(script: str, *args: str) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_values_keep_their_class_and_behaviour_across_processes(group: str, tmp_path: Path):
    imports, cases = GROUPS[group]
    fill = {"imports": textwrap.dedent(imports), "cases": cases, "group": group}
    saved = _python(_SAVE.format(**fill), str(tmp_path))
    loaded = _python(_LOAD.format(**fill), str(tmp_path))
    for name in cases:
        module, qualname, behaviour, importable = loaded[name]
        # The library's own class, by reference (a by-value copy is not `home is cls`)…
        assert importable, f"{name}: loaded as a look-alike of {module}.{qualname}"
        # …the same class and the same behaviour as in the producing process.
        assert [module, qualname, behaviour] == saved[name], name


def _factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    (tmp_path / "lib_factory.py").write_text(
        "def make():\n"
        "    class Local:\n"
        "        def __init__(self):\n"
        "            self.v = 1\n"
        "    return Local()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import lib_factory  # type: ignore[import-not-found]

    return lib_factory


def test_library_class_that_cannot_be_imported_by_name_is_refused_at_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = _factory_module(tmp_path, monkeypatch)
    with pytest.raises(UnserializableValue) as err:
        save_value(lib.make(), str(tmp_path / "out" / "obj"), "obj")  # type: ignore[attr-defined]
    message = str(err.value)
    assert "'obj' (lib_factory.make.<locals>.Local)" in message
    assert "cannot be imported by that name" in message
    assert "load as a different class" in message
    # In a group of values sharing objects, the culprit is named too.
    shared: list[int] = []
    values = {"a": [shared], "b": [shared, lib.make()]}  # type: ignore[attr-defined]
    with pytest.raises(UnserializableValue, match=r"'b' .*cannot be imported by that name"):
        save_values(values, str(tmp_path / "group"))


def test_notebook_defined_classes_still_travel_by_value(tmp_path: Path) -> None:
    # A class made in the notebook (here inside a function, so never replayed by name) has
    # no importable home; by value is how it travels, as before.
    script = (
        "import sys\n"
        "from jupyter_pipeline.runtime import save_value\n"
        "def make():\n"
        "    class Point:\n"
        "        def __init__(self, x):\n"
        "            self.x = x\n"
        "    return Point(3)\n"
        "save_value(make(), sys.argv[1], 'p')\n"
        "print('{}')\n"
    )
    _python(script, str(tmp_path / "p"))
    loaded = _python(
        "import json, sys\nfrom jupyter_pipeline.runtime import load_value\n"
        "v = load_value(sys.argv[1])\nprint(json.dumps({'x': v.x, 'cls': type(v).__name__}))",
        str(tmp_path / "p"),
    )
    assert loaded == {"x": 3, "cls": "Point"}
