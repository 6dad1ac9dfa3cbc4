"""Parameter sweeps: planning, shared steps run once, trial isolation, cancel, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import alive, cmdline, write_nb
from helpers import code_cell as _cell

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.cli import main
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.base import ParameterError
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.runners.sweep import (
    SweepRunner,
    dependent_steps,
    parse_grid,
    parse_values,
    plan_sweep,
)
from jupyter_pipeline.store import RunStore

EXAMPLE = (
    Path(__file__).parent.parent / "examples" / "notebooks" / "diabetes_parameters_metrics.ipynb"
)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "store" / "runs.sqlite")


def _toy(tmp_path: Path, train: str = "score = round(sum(scaled) * depth, 6)") -> Path:
    """load (reads no parameter) → scale (reads lr) → train (reads depth) → metrics."""
    return write_nb(
        tmp_path / "toy.ipynb",
        [
            _cell("import time", "imports"),
            _cell("lr = 0.1\ndepth = 3", "pipeline-parameters"),
            _cell(
                f"with open({str(tmp_path / 'load.log')!r}, 'a') as f:\n    f.write('x')\n"
                "time.sleep(1)\ndata = list(range(10))",
                "step:load",
            ),
            _cell(
                f"with open({str(tmp_path / 'scale.log')!r}, 'a') as f:\n    f.write('x')\n"
                "scaled = [x * lr for x in data]",
                "step:scale",
            ),
            _cell(train, "step:train"),
            _cell("print(score)", "pipeline-metrics"),
        ],
    )


# ------------------------------------------------------------------------ planning (no kernel)


def test_values_parse_like_p_and_split_only_at_top_level_commas():
    assert parse_values("0.01,0.1,1") == [0.01, 0.1, 1]
    assert parse_values("ridge, lasso") == ["ridge", "lasso"]
    assert parse_values("[1, 2],[3]") == [[1, 2], [3]]
    assert parse_values("'a,b',c,{'k': 1, 'j': 2},True") == ["a,b", "c", {"k": 1, "j": 2}, True]
    assert parse_grid(["lr=0.1,1", "depth=3"]) == {"lr": [0.1, 1], "depth": [3]}
    for bad in (["lr"], ["1x=2"], ["lr=1", "lr=2"], ["lr=1,,2"]):
        with pytest.raises(ParameterError):
            parse_grid(bad)


def test_plan_splits_shared_from_dependent_and_checks_types(tmp_path):
    pipeline = analyze_notebook(_toy(tmp_path))
    plan = plan_sweep(pipeline, {"lr": [0.1, 1], "depth": [3, 5, 7]})
    assert plan.shared == ["load"]
    assert plan.dependent == ["scale", "train", "pipeline-metrics"]
    # ints given for a float parameter are widened, as with -p
    assert plan.trials[0] == {"lr": 0.1, "depth": 3} and plan.trials[3] == {"lr": 1.0, "depth": 3}
    assert len(plan.trials) == 6 and plan.base == {}
    assert dependent_steps(pipeline, ["depth"]) == ["train", "pipeline-metrics"]
    with pytest.raises(ParameterError, match=r"depth is int .*cell 1.*'deep'"):
        plan_sweep(pipeline, {"depth": [3, "deep"]})
    with pytest.raises(ParameterError, match="unknown parameter 'alpha'"):
        plan_sweep(pipeline, {"alpha": [1]})
    with pytest.raises(ParameterError, match="both swept"):
        plan_sweep(pipeline, {"lr": [1.0]}, {"lr": 2.0})
    # --random: a seeded draw without replacement from the grid
    a = plan_sweep(pipeline, {"lr": [0.1, 1], "depth": [3, 5, 7]}, sample=4, seed=1)
    b = plan_sweep(pipeline, {"lr": [0.1, 1], "depth": [3, 5, 7]}, sample=4, seed=1)
    assert a.trials == b.trials and len(a.trials) == 4
    assert len({json.dumps(t, sort_keys=True) for t in a.trials}) == 4
    assert all(t in plan.trials for t in a.trials)


# ------------------------------------------------------------------------ with kernels


@pytest.mark.kernel
def test_example_sweep_runs_shared_steps_once_and_matches_plain_runs(tmp_path, store):
    pipeline = analyze_notebook(EXAMPLE)
    plan = plan_sweep(pipeline, {"model_kind": ["ridge", "lasso"], "alpha": [0.1, 1.0, 10.0]})
    assert plan.shared == ["load-data", "add-features", "split"]
    sweep = SweepRunner(store, max_parallel=2).run(pipeline, EXAMPLE, plan)
    assert sweep.state is RunState.succeeded, sweep
    assert [t.state for t in sweep.trials] == [RunState.succeeded] * 6
    runs = [store.get_run(t.run_id) for t in sweep.trials]
    assert all(r.sweep_id == sweep.id for r in runs) and [r.trial for r in runs] == list(range(6))
    for step in plan.shared:  # computed in exactly one trial, served from the cache in the rest
        records = [next(s for s in r.steps if s.step == step) for r in runs]
        assert sorted(s.state.value for s in records) == ["cached"] * 5 + ["succeeded"]
        assert len({json.dumps(s.digests, sort_keys=True) for s in records}) == 1
    for step in plan.dependent:  # every trial ran its own
        assert all(
            next(s for s in r.steps if s.step == step).state is RunState.succeeded for r in runs
        )
    assert sweep.metric == "r2" and sweep.best is not None
    assert sweep.trials[sweep.best].metrics["r2"] == max(t.metrics["r2"] for t in sweep.trials)

    # Each trial's metrics equal a plain run with the same -p values (its own store and cache).
    plain = LocalRunner(RunStore(tmp_path / "plain" / "runs.sqlite"), max_parallel=2)
    for trial in sweep.trials:
        run = plain.run(pipeline, EXAMPLE, parameters=trial.parameters)
        assert run.state is RunState.succeeded
        metrics = plain.store.get_metrics(run.id)["pipeline-metrics"]
        assert metrics == trial.metrics, trial


@pytest.mark.kernel
def test_concurrent_trials_compute_each_step_once_per_distinct_inputs(tmp_path, store):
    nb_path = _toy(tmp_path)
    pipeline = analyze_notebook(nb_path)
    plan = plan_sweep(pipeline, {"lr": [0.1, 1.0], "depth": [3, 5]})
    # All four trials start at the same moment and reach `load` together.
    sweep = SweepRunner(store, max_parallel=4, cache=False).run(pipeline, nb_path, plan)
    assert sweep.state is RunState.succeeded
    assert (tmp_path / "load.log").read_text() == "x"  # once, for all four trials
    assert (tmp_path / "scale.log").read_text() == "xx"  # once per value of lr
    runs = [store.get_run(t.run_id) for t in sweep.trials]
    computed = {
        name: sum(
            1 for r in runs for s in r.steps if s.step == name and s.state.value == "succeeded"
        )
        for name in ("load", "scale", "train")
    }
    assert computed == {"load": 1, "scale": 2, "train": 4}
    assert [t.metrics["score"] for t in sweep.trials] == pytest.approx([13.5, 22.5, 135.0, 225.0])


@pytest.mark.kernel
def test_a_failing_trial_fails_alone_and_cli_shows_the_table(tmp_path, capsys):
    nb_path = _toy(
        tmp_path,
        train="assert depth != 5, 'depth 5 is cursed'\nscore = round(sum(scaled) * depth, 6)",
    )
    db = tmp_path / "store" / "runs.sqlite"
    args = ["sweep", str(nb_path), "-g", "depth=3,5,7", "--store", str(db), "--minimize"]
    assert main([*args, "--csv", str(tmp_path / "t.csv")]) == 1
    out = capsys.readouterr().out
    store = RunStore(db)
    sweep = next(store.list_sweeps())
    assert [t.state.value for t in sweep.trials] == ["succeeded", "failed", "succeeded"]
    failed = store.get_run(sweep.trials[1].run_id)
    train = next(s for s in failed.steps if s.step == "train")
    assert train.state is RunState.failed and "depth 5 is cursed" in train.error
    assert sweep.state is RunState.failed and sweep.best == 0  # smallest score
    assert "best (* smallest score): trial 0" in out
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0] == "trial,run,state,best,depth,score"
    assert rows[1].endswith(",succeeded,1,3,13.5") and ",failed,0,5," in rows[2]

    assert main(["show", sweep.id, "--store", str(db)]) == 0
    shown = capsys.readouterr().out
    assert f"sweep {sweep.id}" in shown and "run once for all trials: load" in shown
    assert main(["show", sweep.trials[2].run_id, "--store", str(db)]) == 0
    assert f"trial 2 of sweep {sweep.id}" in capsys.readouterr().out
    assert main(["runs", "--store", str(db)]) == 0
    assert f"(sweep {sweep.id} trial 1)" in capsys.readouterr().out
    # Bad input: exit 2 with the notebook named, nothing recorded.
    assert main(["sweep", str(nb_path), "-g", "depth=3,x", "--store", str(db)]) == 2
    assert "toy.ipynb: parameter depth is int" in capsys.readouterr().err
    assert (
        main(["sweep", str(nb_path), "-g", "depth=3", "--metric", "nope", "--store", str(db)]) == 2
    )
    assert len(list(store.list_sweeps())) == 1


@pytest.mark.kernel
def test_cancel_stops_the_whole_sweep_and_leaves_no_process(tmp_path):
    nb_path = write_nb(
        tmp_path / "slow.ipynb",
        [
            _cell("import subprocess, time", "imports"),
            _cell("depth = 3", "pipeline-parameters"),
            _cell("data = 1", "step:load"),
            _cell(
                "child = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\nx = depth",
                "step:train",
            ),
        ],
    )
    db = tmp_path / "store" / "runs.sqlite"
    env = {**os.environ, "JUPYTER_PIPELINE_STORE": str(db)}
    argv = [
        sys.executable,
        "-m",
        "jupyter_pipeline.cli",
        "sweep",
        str(nb_path),
        "-g",
        "depth=1,2,3,4",
    ]
    proc = subprocess.Popen(
        [*argv, "--max-parallel", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        runner = psutil.Process(proc.pid)
        deadline = time.time() + 120
        family: list[psutil.Process] = []
        # Wait until both running trials' `train` kernels have started their child.
        while sum("sleep 300" in cmdline(p) for p in family) < 2:
            assert time.time() < deadline and proc.poll() is None, "the trials never started"
            time.sleep(0.2)
            try:
                family = runner.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
        store = RunStore(db)
        sweep = next(store.list_sweeps())
        assert main(["cancel", sweep.id, "--store", str(db)]) == 0
        assert proc.wait(timeout=60) == 1
        sweep = store.get_sweep(sweep.id)
        assert sweep.state is RunState.cancelled
        states = [t.state for t in sweep.trials]
        assert states.count(RunState.cancelled) == 4, states  # two stopped, two never started
        assert not any(alive(p) for p in family)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_gpu_step_without_gpus_stops_the_sweep_before_anything_is_recorded(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # this machine has no GPU
    nb_path = write_nb(
        tmp_path / "gpu.ipynb",
        [
            _cell("depth = 3", "pipeline-parameters"),
            _cell("x = depth", "step:train", "limit:nvidia.com/gpu:1"),
        ],
    )
    db = tmp_path / "store" / "runs.sqlite"
    assert main(["sweep", str(nb_path), "-g", "depth=1,2", "--store", str(db)]) == 2
    assert "gpu.ipynb" in capsys.readouterr().err
    store = RunStore(db)
    assert list(store.list_sweeps()) == [] and store.list_runs() == []


@pytest.mark.kernel
def test_a_failing_shared_step_is_computed_once_and_fails_every_trial(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "broken.ipynb",
        [
            _cell("depth = 3", "pipeline-parameters"),
            _cell(
                f"with open({str(tmp_path / 'load.log')!r}, 'a') as f:\n    f.write('x')\n"
                "data = 1 / 0",
                "step:load",
            ),
            _cell("score = data * depth", "step:train"),
        ],
    )
    pipeline = analyze_notebook(nb_path)
    plan = plan_sweep(pipeline, {"depth": [1, 2, 3]})
    sweep = SweepRunner(store, max_parallel=3).run(pipeline, nb_path, plan)
    assert [t.state for t in sweep.trials] == [RunState.failed] * 3
    assert (tmp_path / "load.log").read_text() == "x"  # not once per trial
    loads = [
        next(s for s in store.get_run(t.run_id).steps if s.step == "load") for t in sweep.trials
    ]
    assert all(s.state is RunState.failed and s.error_cell == 1 for s in loads), [
        (s.state, s.error_cell, s.error) for s in loads
    ]
    owner = next(
        t.run_id for t, s in zip(sweep.trials, loads, strict=True) if "same inputs" not in s.error
    )
    others = [s.error for s in loads if "same inputs" in s.error]
    assert len(others) == 2 and all(f"failed in run {owner}" in e for e in others)
    assert all("ZeroDivisionError" in e for e in others)


@pytest.mark.kernel
def test_the_trials_of_a_sweep_fork_their_kernels_from_one_fork_server(tmp_path, store):
    nb_path = _toy(tmp_path)
    pipeline = analyze_notebook(nb_path)
    plan = plan_sweep(pipeline, {"lr": [0.1, 1.0], "depth": [3, 5]})
    servers: set[int] = set()

    def look(_event) -> None:
        # Fork servers: their zygotes and the kernels forked from them show the same command
        # line, so count the roots (whose parent is not one of them).
        family = psutil.Process().children(recursive=True)
        forked = {p.pid: p for p in family if "forkserver" in cmdline(p) and alive(p)}
        for pid, proc in forked.items():
            with contextlib.suppress(psutil.Error):
                if proc.ppid() not in forked:
                    servers.add(pid)

    sweep = SweepRunner(store, max_parallel=2, cache=False).run(
        pipeline, nb_path, plan, on_event=look
    )
    assert sweep.state is RunState.succeeded
    assert [t.metrics["score"] for t in sweep.trials] == pytest.approx([13.5, 22.5, 135.0, 225.0])
    assert len(servers) == 1  # one for the sweep (it was one per trial)
    family = psutil.Process().children(recursive=True)
    assert not [p for p in family if "forkserver" in cmdline(p) and alive(p)]  # closed at the end
