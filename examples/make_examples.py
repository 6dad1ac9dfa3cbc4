"""Generate the example notebooks in ``examples/notebooks/`` (without outputs).

Each notebook is offline (scikit-learn's built-in datasets), runs in a few seconds and is
deterministic (every estimator and RNG seeded), so a straight run and a pipeline run print
the same text. Cells are tagged the Kale way: ``imports``, ``pipeline-parameters``,
``step:NAME``, ``prev:NAME``, ``pipeline-metrics``.

Run ``python examples/make_examples.py`` after editing; cell ids are fixed, so the output is
byte-for-byte reproducible and the golden analysis files only change when the code does.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent / "notebooks"

METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def notebook(name: str, cells: list[tuple[str, str, list[str]]]) -> nbformat.NotebookNode:
    """Build a notebook from (kind, source, tags) triples with stable cell ids."""
    nb = new_notebook(metadata=dict(METADATA))
    for k, (kind, source, tags) in enumerate(cells):
        source = source.strip("\n")
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"{name.replace('_', '-')}-{k:02d}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def md(source: str) -> tuple[str, str, list[str]]:
    return ("md", source, [])


def code(source: str, *tags: str) -> tuple[str, str, list[str]]:
    return ("code", source, list(tags))


IRIS = [
    md("""
# Iris classifier: a straight pipeline

The simplest shape: **load → split → train → evaluate**, one step per stage, each step
tagged `step:NAME` with `prev:` pointing at the step before it (Kale style). The
`pipeline-parameters` cell holds the knobs you can override at run time
(`jupyter-pipeline run iris_classifier.ipynb -p C=0.5`), and the `pipeline-metrics`
cell reports the accuracy.

Every step runs in a fresh kernel; the analysis infers which variables travel between
them (`df` to `split`, the four split arrays to `train`/`evaluate`, `model` to `evaluate`).
Everything is seeded, so a pipeline run prints exactly what a top-to-bottom run prints.
"""),
    code(
        """
import matplotlib.pyplot as plt
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, classification_report
from sklearn.model_selection import train_test_split
""",
        "imports",
    ),
    code(
        """
test_size = 0.3
C = 1.0
max_iter = 200
random_state = 42
""",
        "pipeline-parameters",
    ),
    md("## Load the data"),
    code(
        """
iris = load_iris(as_frame=True)
df = iris.frame
print(df.shape)
df.head()
""",
        "step:load_data",
    ),
    code(
        """
df.groupby("target").mean().round(2)
"""
    ),
    md("## Split into train and test sets"),
    code(
        """
X = df[iris.feature_names]
y = df["target"]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=test_size, random_state=random_state, stratify=y
)
print(f"train: {X_train.shape}, test: {X_test.shape}")
""",
        "step:split",
        "prev:load_data",
    ),
    md("## Train a logistic regression"),
    code(
        """
model = LogisticRegression(C=C, max_iter=max_iter)
model.fit(X_train, y_train)
print("train accuracy:", round(model.score(X_train, y_train), 4))
""",
        "step:train",
        "prev:split",
    ),
    md("## Evaluate on the held-out set"),
    code(
        """
predictions = model.predict(X_test)
accuracy = accuracy_score(y_test, predictions)
print(classification_report(y_test, predictions, target_names=iris.target_names))
""",
        "step:evaluate",
        "prev:train",
    ),
    code(
        """
ConfusionMatrixDisplay.from_predictions(
    y_test, predictions, display_labels=iris.target_names, colorbar=False
)
plt.title(f"accuracy {accuracy:.3f}")
plt.show()
"""
    ),
    code(
        """
print(accuracy)
""",
        "pipeline-metrics",
    ),
]

WINE = [
    md("""
# Wine: two independent branches that join

After a shared `prepare` step, two models are trained on the same prepared data in two
**independent branches** — a random forest on the raw features and a logistic regression on
standardized features. Neither branch reads anything the other one writes, so the
pipeline runs them **at the same time** (`jupyter-pipeline run --max-parallel 2`); the
`compare` step waits for both and picks the better model.

Note that the branches only *read* the shared training data: fitting a model never changes
`X_train`, so the analysis does not order one branch after the other.
"""),
    code(
        """
import matplotlib.pyplot as plt
import pandas as pd
from sklearn.datasets import load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
""",
        "imports",
    ),
    code(
        """
test_size = 0.3
seed = 3
n_estimators = 100
C = 0.5
""",
        "pipeline-parameters",
    ),
    md("## Prepare the data (shared by both branches)"),
    code(
        """
wine = load_wine(as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(
    wine.data, wine.target, test_size=test_size, random_state=seed, stratify=wine.target
)
scaler = StandardScaler().fit(X_train)
X_train_scaled = scaler.transform(X_train)
X_test_scaled = scaler.transform(X_test)
print(f"{len(X_train)} training and {len(X_test)} test samples, {X_train.shape[1]} features")
""",
        "step:prepare",
    ),
    md("## Branch 1: random forest on the raw features"),
    code(
        """
forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
forest.fit(X_train, y_train)
forest_pred = forest.predict(X_test)
forest_scores = {
    "accuracy": accuracy_score(y_test, forest_pred),
    "f1_macro": f1_score(y_test, forest_pred, average="macro"),
}
top = pd.Series(forest.feature_importances_, index=X_train.columns).nlargest(3)
print("most important features:", ", ".join(top.index))
""",
        "step:random_forest",
        "prev:prepare",
    ),
    md("## Branch 2: logistic regression on standardized features"),
    code(
        """
logistic = LogisticRegression(C=C, max_iter=1000)
logistic.fit(X_train_scaled, y_train)
logistic_pred = logistic.predict(X_test_scaled)
logistic_scores = {
    "accuracy": accuracy_score(y_test, logistic_pred),
    "f1_macro": f1_score(y_test, logistic_pred, average="macro"),
}
print("logistic regression accuracy:", round(logistic_scores["accuracy"], 4))
""",
        "step:logistic_regression",
        "prev:prepare",
    ),
    md("## Join: compare the two models"),
    code(
        """
comparison = pd.DataFrame(
    {"random forest": forest_scores, "logistic regression": logistic_scores}
).T.round(4)
best_model = comparison["f1_macro"].idxmax()
forest_accuracy = comparison.loc["random forest", "accuracy"]
logistic_accuracy = comparison.loc["logistic regression", "accuracy"]
print("best model:", best_model)
comparison
""",
        "step:compare",
        "prev:random_forest",
        "prev:logistic_regression",
    ),
    code(
        """
ax = comparison.plot.bar(rot=0, ylim=(0.8, 1.0), figsize=(6, 3))
ax.set_ylabel("score")
plt.show()
"""
    ),
    code(
        """
print(forest_accuracy)
print(logistic_accuracy)
""",
        "pipeline-metrics",
    ),
]

DIABETES = [
    md("""
# Diabetes: parameters of every type, metrics, and an in-place change

This notebook shows three things the pipeline gets right:

* **Parameters of several types** — `int`, `float`, `str`, `bool` and `list` in the
  `pipeline-parameters` cell; each becomes a typed pipeline parameter
  (`-p model_kind=lasso -p standardize=false -p features='["bmi","bp"]'`).
* **Global RNG state** — `np.random.seed(seed)` in the first step seeds numpy's global
  generator; the bootstrap step draws from it several steps later. The analysis tracks the
  generator as state, so the pipeline starts the bootstrap from exactly the state a
  top-to-bottom run would have, and prints the same numbers.
* **An in-place mutation** — `add_features` adds a column to `df` without rebinding it
  (`df["bmi_bp"] = …`). `split` reads `df` and gets it from `add_features` (the last
  step that changed it), not from `load_data` (the step that created it).

The `pipeline-metrics` cell reports the test R², the mean absolute error and the bootstrap
spread.
"""),
    code(
        """
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso, Ridge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
""",
        "imports",
    ),
    code(
        """
seed = 7
n_bootstrap = 200
alpha = 0.5
model_kind = "ridge"
standardize = True
features = ["age", "bmi", "bp", "s1", "s5"]
""",
        "pipeline-parameters",
    ),
    md("## Load, with a little seeded measurement noise"),
    code(
        """
np.random.seed(seed)
df = load_diabetes(as_frame=True, scaled=False).frame
df["bp"] = df["bp"] + np.random.normal(0.0, 1.0, len(df)).round(1)
print(df.shape)
df[features].describe().round(1)
""",
        "step:load_data",
    ),
    md("## Add a derived feature (in place: `df` is changed, not rebound)"),
    code(
        """
df["bmi_bp"] = df["bmi"] * df["bp"] / 100
columns = [*features, "bmi_bp"]
print("columns used:", columns)
""",
        "step:add_features",
        "prev:load_data",
    ),
    md("## Split"),
    code(
        """
X_train, X_test, y_train, y_test = train_test_split(
    df[columns], df["target"], test_size=0.25, random_state=seed
)
print(f"train {X_train.shape}, test {X_test.shape}")
""",
        "step:split",
        "prev:add_features",
    ),
    md("## Train the chosen model"),
    code(
        """
estimator = Ridge(alpha=alpha) if model_kind == "ridge" else Lasso(alpha=alpha, max_iter=10_000)
model = make_pipeline(StandardScaler(), estimator) if standardize else estimator
model.fit(X_train, y_train)
coef = model[-1].coef_ if standardize else model.coef_
coefficients = {name: round(float(c), 2) for name, c in zip(columns, coef)}
print(model_kind, "coefficients:", coefficients)
""",
        "step:train",
        "prev:split",
    ),
    md("## Evaluate, with a bootstrap of the test-set R² (draws from the seeded global RNG)"),
    code(
        """
predictions = model.predict(X_test)
r2 = round(float(r2_score(y_test, predictions)), 4)
mae = round(float(mean_absolute_error(y_test, predictions)), 2)
scores = []
for _ in range(n_bootstrap):
    idx = np.random.randint(0, len(y_test), len(y_test))
    scores.append(r2_score(y_test.iloc[idx], predictions[idx]))
r2_spread = round(float(np.std(scores)), 4)
print(f"R2 {r2}, MAE {mae}, bootstrap R2 std {r2_spread}")
""",
        "step:evaluate",
        "prev:train",
    ),
    code(
        """
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(y_test, predictions, s=8)
ax.plot([25, 350], [25, 350], color="grey", lw=1)
ax.set_xlabel("measured")
ax.set_ylabel("predicted")
plt.show()
"""
    ),
    code(
        """
print(r2)
print(mae)
print(r2_spread)
""",
        "pipeline-metrics",
    ),
]

EXAMPLES = {
    "iris_classifier": IRIS,
    "wine_branches": WINE,
    "diabetes_parameters_metrics": DIABETES,
}


def main() -> None:
    """Write every example notebook."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, cells in EXAMPLES.items():
        path = OUT / f"{name}.ipynb"
        nbformat.write(notebook(name, cells), path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
