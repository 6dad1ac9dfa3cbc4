"""The fidelity measure on three quick corpus notebooks (the full measure: ``bench/fidelity.py``).

Each notebook is split one step per code cell, run straight through with papermill (to find
the cells whose outputs are stable) and as a pipeline with real kernels; every stable cell's
text outputs and image data must be equal in the merged notebook.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from jupyter_pipeline.runners.verify import image_fingerprints

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"


def _fidelity():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_fidelity", ROOT / "bench" / "fidelity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fidelity = _fidelity()


def test_normalize_masks_only_timings() -> None:
    assert fidelity.normalize(
        "CPU times: user 1.2 ms, sys: 0 ns, total: 1.2 ms\nWall time: 3 s"
    ) == ("CPU times: user …\nWall time: …")
    assert (
        fidelity.normalize("12.3 ms ± 1.1 ms per loop (mean ± std. dev. of 7 runs, 100 loops each)")
        == "… per loop"
    )
    # Ordinary numbers are real results: never masked.
    assert fidelity.normalize("accuracy 0.93 in 3 s") == "accuracy 0.93 in 3 s"


def test_cell_outputs_compare_text_images_and_mask_addresses() -> None:
    cell = {
        "outputs": [
            {"output_type": "stream", "name": "stdout", "text": "a\n"},
            {"output_type": "stream", "name": "stdout", "text": "b\n"},
            {"output_type": "stream", "name": "stderr", "text": "warn\n"},
            {
                "output_type": "display_data",
                "data": {"text/plain": "<Figure at 0x7f00deadbeef>", "image/png": "iVBORw0KGgo="},
            },
        ]
    }
    out = fidelity.cell_outputs(cell)
    assert out["text"] == ["[stdout] a\nb\n", "[result] <Figure at 0x…>"]
    assert out["stderr"] == ["[stderr] warn\n"]
    assert out["images"] == image_fingerprints({"image/png": "iVBORw0KGgo="})
    other = {"outputs": [dict(cell["outputs"][3], data={"image/png": "iVBORw0KGgp="})]}
    assert fidelity.cell_outputs(other)["images"] != out["images"]


@pytest.mark.kernel
@pytest.mark.corpus
@pytest.mark.parametrize(
    "name",
    [
        "kale__pipeline_parameters_and_metrics",
        "sklearn__cluster__plot_dbscan",
        # np.random.seed(42): the R2 scores printed in later steps follow from its draws.
        "sklearn__linear_model__plot_nnls",
    ],
)
def test_split_per_cell_reproduces_the_straight_run(name: str, tmp_path: Path) -> None:
    # Two straight runs are enough here: these notebooks' only unseeded output is a float
    # (kale__pipeline_parameters_and_metrics), which never repeats by chance. (Not
    # plot_mean_shift: its unseeded make_blobs usually gives 3 clusters, now and then 4, so
    # two straight runs can agree on a count that a third run, the pipeline's, does not.)
    r = fidelity.measure(CORPUS / f"{name}.ipynb", runs=2, work=tmp_path, max_parallel=2)
    assert r.straight_error is None
    assert r.run_error is None, r.run_error
    assert r.run_state == "succeeded"
    assert r.compared >= 2
    assert [(d.cell, d.diff) for d in r.differing] == []
    assert r.equal == r.compared
    assert r.reproduced


def test_masks_come_from_the_straight_runs() -> None:
    runs = [
        ["[stdout] fit done in 0.002s\nr2 0.480\n"],
        ["[stdout] fit done in 0.011s\nr2 0.480\n"],
    ]
    want = fidelity.text_expectation(runs)
    assert want is not None
    assert fidelity.text_matches(want, ["[stdout] fit done in 0.5s\nr2 0.480\n"])
    # A line that was the same in every straight run is compared exactly.
    assert not fidelity.text_matches(want, ["[stdout] fit done in 0.5s\nr2 0.481\n"])
    assert not fidelity.text_matches(want, ["[stdout] fit took 0.5s\nr2 0.480\n"])
    assert not fidelity.text_matches(want, ["[stdout] fit done in 0.5s\n"])
    # A varying number may re-align a table: spacing is loosened in that cell, text is not.
    table = fidelity.text_expectation(
        [["[result]    a  b\n0   5  1"], ["[result]    a  b\n0   7  1"]]
    )
    assert table is not None
    assert fidelity.text_matches(table, ["[result]     a  b\n0   15  1"])
    assert not fidelity.text_matches(table, ["[result]     a  c\n0   15  1"])
    assert not fidelity.text_matches(table, ["[result]     a  b\n0   15  2"])
    # A cell whose numbers never varied is compared exactly, spaces included.
    exact = fidelity.text_expectation([["[stdout] a  1"], ["[stdout] a  1"]])
    assert exact is not None and not fidelity.text_matches(exact, ["[stdout] a 1"])
    # Text that differs beyond numbers between straight runs cannot be compared at all.
    assert fidelity.text_expectation([["[stdout] a"], ["[stdout] b"]]) is None
    assert fidelity.text_expectation([["[stdout] a"], ["[stdout] a\nb"]]) is None
