"""Which KFP artifact type a passed variable gets: Dataset, Model or Artifact.

The analysis knows names, not values, so the type is inferred from the statement that
produced the value (never from the variable's name): ``pd.read_csv(...)``, a DataFrame or
array method, slicing or arithmetic on a Dataset → ``Dataset``; an estimator constructor
from an ML library or ``.fit(...)`` → ``Model``; anything else → ``Artifact``. The walk
follows the notebook top to bottom, so ``df2 = df.dropna()`` is a Dataset because ``df``
was one, and ``y = x`` takes ``x``'s kind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

from nbformat import NotebookNode

from jupyter_pipeline.analysis.source import to_python
from jupyter_pipeline.model import Pipeline, Step
from jupyter_pipeline.runtime.kernel import state_key

__all__ = ["ARTIFACT", "DATASET", "MODEL", "infer_artifact_kinds"]

DATASET = "Dataset"
MODEL = "Model"
ARTIFACT = "Artifact"

# Modules whose functions return arrays or frames (the common ones).
_DATA_MODULES = ("pandas", "numpy", "polars", "pyarrow", "scipy.sparse", "xarray")
# Functions of those modules that do NOT return data (scalars, RNG objects, dtypes…).
_NOT_DATA = {
    "default_rng",
    "RandomState",
    "seed",
    "set_option",
    "get_option",
    "isnan",
    "isclose",
    "allclose",
    "array_equal",
    "dtype",
    "finfo",
    "iinfo",
}
# Libraries whose classes are estimators / models once constructed.
_MODEL_MODULES = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "catboost",
    "statsmodels",
    "torch.nn",
    "keras",
    "tensorflow.keras",
    "tensorflow",
    "transformers",
)
_NOT_MODEL_MODULES = ("sklearn.model_selection", "sklearn.datasets", "sklearn.metrics")
# Methods that return a fitted model.
_MODEL_METHODS = {"fit", "partial_fit", "train"}
# Methods that return data whatever the receiver (estimators included).
_DATA_METHODS = {
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "transform",
    "fit_transform",
    "inverse_transform",
    "fit_predict",
    "to_numpy",
    "to_frame",
    "reshape",
    "astype",
}
# Attributes of a data object that are data again.
_DATA_ATTRS = {"values", "T", "loc", "iloc", "index", "columns", "str", "dt", "array"}
# Methods of a data object that return a scalar or a non-data object.
_SCALAR_METHODS = {
    "sum",
    "mean",
    "std",
    "var",
    "min",
    "max",
    "median",
    "item",
    "nunique",
    "tolist",
    "to_dict",
    "to_json",
    "to_csv",
    "to_string",
    "count",
    "any",
    "all",
    "score",
}


class _Walker:
    """Tracks the kind of each global name through the notebook's statements."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.origins: dict[str, str] = {}  # imported name → dotted origin

    # -- imports -------------------------------------------------------------------------
    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                self.origins[bound] = alias.name if alias.asname else alias.name.split(".")[0]
        else:
            module = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    self.origins[alias.asname or alias.name] = f"{module}.{alias.name}"

    def _dotted(self, node: ast.expr) -> str | None:
        """``pd.read_csv`` → ``pandas.read_csv`` (resolving the import alias)."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        head = self.origins.get(node.id)
        if head is None:
            return None
        return ".".join([head, *reversed(parts)])

    # -- expressions ---------------------------------------------------------------------
    def kind(self, node: ast.expr | None) -> str:
        """Kind of the value an expression evaluates to."""
        if node is None:
            return ARTIFACT
        if isinstance(node, ast.Name):
            return self.kinds.get(node.id, ARTIFACT)
        if isinstance(node, ast.Subscript | ast.Starred):
            return DATASET if self.kind(node.value) == DATASET else ARTIFACT
        if isinstance(node, ast.Attribute):
            if node.attr in _DATA_ATTRS and self.kind(node.value) == DATASET:
                return DATASET
            return ARTIFACT
        if isinstance(node, ast.BinOp):
            kinds = {self.kind(node.left), self.kind(node.right)}
            return DATASET if DATASET in kinds else ARTIFACT
        if isinstance(node, ast.UnaryOp):
            return self.kind(node.operand)
        if isinstance(node, ast.Compare):
            return DATASET if self.kind(node.left) == DATASET else ARTIFACT
        if isinstance(node, ast.IfExp):
            body, other = self.kind(node.body), self.kind(node.orelse)
            return body if body == other else ARTIFACT
        if isinstance(node, ast.Call):
            return self._call_kind(node)
        return ARTIFACT

    def _call_kind(self, node: ast.Call) -> str:
        func = node.func
        dotted = self._dotted(func)
        if isinstance(func, ast.Attribute):
            method = func.attr
            if method in _MODEL_METHODS:
                return MODEL
            if method in _DATA_METHODS:
                return DATASET
            receiver = self.kind(func.value)
            if dotted is None:
                if receiver == DATASET and method not in _SCALAR_METHODS:
                    return DATASET  # df.dropna(), df.groupby(...).mean(), X.copy()
                if receiver == MODEL and method in {"copy", "set_params"}:
                    return MODEL
                return ARTIFACT
        if dotted is None:
            return ARTIFACT
        return _kind_of_callable(dotted)

    # -- statements ----------------------------------------------------------------------
    def _bind(self, target: ast.expr, kind: str, value: ast.expr | None) -> None:
        if isinstance(target, ast.Name):
            self.kinds[target.id] = kind
        elif isinstance(target, ast.Tuple | ast.List):
            elts = target.elts
            if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(elts):
                for t, v in zip(elts, value.elts, strict=True):
                    self._bind(t, self.kind(v), v)
            else:
                # X_train, X_test, ... = train_test_split(...): each part shares the call's
                # data-ness; a tuple of unknown things stays unknown.
                part = DATASET if kind == DATASET or _splits_data(value) else ARTIFACT
                for t in elts:
                    self._bind(t, part, None)
        elif isinstance(target, ast.Starred):
            self._bind(target.value, kind, None)

    def statement(self, node: ast.stmt) -> None:
        """Update kinds with one top-level statement (compound bodies walked too)."""
        if isinstance(node, ast.Import | ast.ImportFrom):
            self._import(node)
        elif isinstance(node, ast.Assign):
            kind = self.kind(node.value)
            for target in node.targets:
                self._bind(target, kind, node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            self._bind(node.target, self.kind(node.value), node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            kinds = {self.kind(node.target), self.kind(node.value)}
            self.kinds[node.target.id] = DATASET if DATASET in kinds else ARTIFACT
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            self.kinds[node.name] = ARTIFACT
        elif isinstance(node, ast.For | ast.AsyncFor):
            self._bind(node.target, ARTIFACT, None)
            for child in [*node.body, *node.orelse]:
                self.statement(child)
        elif isinstance(node, ast.If | ast.While):
            for child in [*node.body, *node.orelse]:
                self.statement(child)
        elif isinstance(node, ast.With | ast.AsyncWith):
            for item in node.items:
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, ARTIFACT, None)
            for child in node.body:
                self.statement(child)
        elif isinstance(node, ast.Try):
            for child in [*node.body, *node.orelse, *node.finalbody]:
                self.statement(child)
            for handler in node.handlers:
                for child in handler.body:
                    self.statement(child)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            # model.fit(X, y) as a statement leaves `model` a fitted Model.
            func = node.value.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in _MODEL_METHODS
                and isinstance(func.value, ast.Name)
            ):
                self.kinds[func.value.id] = MODEL
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef) else ():
            if isinstance(sub, ast.NamedExpr) and isinstance(sub.target, ast.Name):
                self.kinds[sub.target.id] = self.kind(sub.value)


def _splits_data(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Call):
        func = value.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in {"train_test_split", "make_classification", "make_regression", "make_blobs"}
    return False


def _kind_of_callable(dotted: str) -> str:
    """Kind of what calling the function or class ``dotted`` (e.g. ``pandas.read_csv``) gives."""
    module, _, name = dotted.rpartition(".")
    if module.startswith(_NOT_MODEL_MODULES):
        if name.startswith(("make_", "fetch_")) or name == "train_test_split":
            return DATASET
        return ARTIFACT
    if module.startswith(_MODEL_MODULES) and name[:1].isupper():
        return MODEL
    if module.startswith(_DATA_MODULES):
        return ARTIFACT if name in _NOT_DATA else DATASET
    return ARTIFACT


def _step_code_cells(nb: NotebookNode, step: Step) -> list[int]:
    return [i for i in step.cells if nb.cells[i].get("cell_type") == "code"]


def _statements(source: str) -> Iterable[ast.stmt]:
    try:
        return ast.parse(to_python(source)).body
    except SyntaxError:
        return []


def infer_artifact_kinds(pipeline: Pipeline, nb: NotebookNode) -> dict[tuple[str, str], str]:
    """Infer the KFP artifact type of every variable a step passes on.

    Args:
        pipeline: The analyzed pipeline.
        nb: The source notebook it was analyzed from.

    Returns:
        ``{(producer step, variable): "Dataset" | "Model" | "Artifact"}`` for every step
        output (state pseudo-variables are always ``Artifact``).
    """
    walker = _Walker()
    # The kinds at the end of each step: walk the notebook top to bottom (that is the order
    # the promise is about) and snapshot after each step's last code cell.
    last_cell = {step.name: max(_step_code_cells(nb, step), default=-1) for step in pipeline.steps}
    snapshots: dict[str, dict[str, str]] = {}
    by_last: dict[int, list[str]] = {}
    for name, cell in last_cell.items():
        by_last.setdefault(cell, []).append(name)
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            for stmt in _statements("".join(src) if isinstance(src, list) else src):
                walker.statement(stmt)
        for name in by_last.get(index, []):
            snapshots[name] = dict(walker.kinds)
    out: dict[tuple[str, str], str] = {}
    for step in pipeline.steps:
        kinds = snapshots.get(step.name, {})
        for var in step.outputs:
            out[(step.name, var)] = kinds.get(var, ARTIFACT)
        for var in step.state_outputs:
            out[(step.name, state_key(var))] = ARTIFACT
    return out
