"""GPU steps on this machine: one device each through CUDA_VISIBLE_DEVICES, waiting for a
free one; refused up front (or run on the CPU with allow_cpu) where there is none.

The device lists are fake (this machine has no GPU): given to the runner, or printed by a
stand-in ``nvidia-smi`` script; the kernels, the runner and the CLI are real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import code_cell as _cell
from helpers import stream_text, write_nb

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.gpus import GpuPool, GpuUnavailable, check_gpus, detect_gpus
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.store import RunStore

_SHOW = "print('devices:', os.environ.get('CUDA_VISIBLE_DEVICES'))"


def _gpu_notebook(path: Path, tag: str = "limit:nvidia.com/gpu:1") -> Path:
    return write_nb(
        path,
        [
            _cell("import os, time", "imports"),
            _cell("seed = 1\n" + _SHOW, "step:prep"),
            _cell(f"time.sleep(1.5)\na = seed + 1\n{_SHOW}", "step:train-a", "prev:prep", tag),
            _cell(f"time.sleep(1.5)\nb = seed + 2\n{_SHOW}", "step:train-b", "prev:prep", tag),
            _cell(f"time.sleep(1.5)\nc = seed + 3\n{_SHOW}", "step:train-c", "prev:prep", tag),
            _cell("print(a + b + c)", "step:report"),
        ],
    )


def _devices_seen(merged: Path) -> dict[int, str]:
    nb = nbformat.read(str(merged), as_version=4)
    seen = {}
    for index, cell in enumerate(nb.cells):
        for line in stream_text(cell).splitlines():
            if line.startswith("devices: "):
                seen[index] = line.removeprefix("devices: ")
    return seen


def _fake_smi(folder: Path, lines: list[str], code: int = 0) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    body = "".join(f"echo '{line}'\n" for line in lines)
    smi.write_text(f"#!/bin/sh\n{body}exit {code}\n")
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "PATH": f"{folder}{os.pathsep}{env.get('PATH', '')}"}


def test_devices_are_found_from_cuda_visible_devices_or_nvidia_smi(tmp_path):
    env = _fake_smi(
        tmp_path / "bin",
        ["GPU 0: NVIDIA H200 (UUID: GPU-aaaa)", "GPU 1: NVIDIA H200 (UUID: GPU-bbbb)"],
    )
    assert detect_gpus(env)[0] == ["0", "1"]
    # The user's own choice wins, whatever nvidia-smi lists.
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "3,GPU-bbbb"})[0] == ["3", "GPU-bbbb"]
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": ""})[0] == []
    assert detect_gpus({**env, "CUDA_VISIBLE_DEVICES": "2,-1,3"})[0] == ["2"]
    # No driver: nvidia-smi fails; no nvidia-smi at all.
    broken = _fake_smi(tmp_path / "broken", ["NVIDIA-SMI has failed"], code=9)
    devices, why = detect_gpus(broken)
    assert devices == [] and "NVIDIA-SMI has failed" in why
    assert detect_gpus({"PATH": str(tmp_path / "empty")}) == ([], "no nvidia-smi on PATH")


def test_pool_hands_out_each_device_once():
    pool = GpuPool(["0", "1", "2"])
    a = pool.take(2)
    assert a == ["0", "1"] and pool.take(2) is None
    b = pool.take(1)
    assert b == ["2"] and pool.take(1) is None
    pool.give(a)
    assert pool.free == ["0", "1"]


@pytest.mark.kernel
def test_steps_get_their_own_device_and_wait_for_a_free_one(tmp_path):
    nb_path = _gpu_notebook(tmp_path / "gpus.ipynb")
    merged = tmp_path / "merged.ipynb"
    runner = LocalRunner(
        RunStore(tmp_path / "runs.sqlite"), gpus=["0", "1"], max_parallel=4, cache=False
    )
    run = runner.run(analyze_notebook(nb_path), nb_path, output=merged)
    assert run.state is RunState.succeeded, run
    seen = _devices_seen(merged)
    steps = {s.step: s for s in run.steps}
    # The step without a GPU tag is left alone; each GPU step sees exactly one device.
    assert seen[1] == str(os.environ.get("CUDA_VISIBLE_DEVICES"))
    devices = {name: seen[cell] for name, cell in (("train-a", 2), ("train-b", 3), ("train-c", 4))}
    assert set(devices.values()) <= {"0", "1"}
    # Two GPU steps that ran at the same time never had the same device ...
    names = sorted(devices)
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            a, b = steps[x], steps[y]
            if a.started < b.finished and b.started < a.finished:
                assert devices[x] != devices[y], (x, y, devices)
    # ... and with four execution slots but two devices, one of the three waited.
    starts = sorted(steps[n].started for n in names)
    ends = sorted(steps[n].finished for n in names)
    assert starts[2] >= ends[0]


def test_no_gpu_fails_up_front_with_the_step_and_cell(tmp_path):
    nb_path = _gpu_notebook(tmp_path / "gpus.ipynb", tag="limit:gpu:1")
    store = RunStore(tmp_path / "runs.sqlite")
    pipeline = analyze_notebook(nb_path)
    with pytest.raises(GpuUnavailable) as err:
        LocalRunner(store, gpus=[]).run(pipeline, nb_path)
    message = str(err.value)
    assert str(nb_path) in message
    assert "step train-a (cell 2) asks for 1 GPU (limit:gpu:1)" in message
    assert "--allow-cpu" in message
    assert store.list_runs() == []  # nothing ran, nothing recorded

    # Too few devices for a step that asks for two: refused as well; allow_cpu hides them.
    twice = _gpu_notebook(tmp_path / "two.ipynb", tag="limit:nvidia.com/gpu:2")
    with pytest.raises(GpuUnavailable, match=r"asks for 2 GPUs .* has 1 GPU"):
        check_gpus(analyze_notebook(twice), ["0"], "given", allow_cpu=False, notebook="two")
    needs = check_gpus(analyze_notebook(twice), ["0"], "given", allow_cpu=True, notebook="two")
    assert needs == {"train-a": -1, "train-b": -1, "train-c": -1}


@pytest.mark.kernel
def test_allow_cpu_runs_gpu_steps_with_the_devices_hidden(tmp_path):
    nb_path = _gpu_notebook(tmp_path / "gpus.ipynb", tag="limit:nvidia.com/gpu:2")
    merged = tmp_path / "merged.ipynb"
    runner = LocalRunner(RunStore(tmp_path / "runs.sqlite"), gpus=["0"], allow_cpu=True)
    run = runner.run(analyze_notebook(nb_path), nb_path, output=merged)
    assert run.state is RunState.succeeded, run
    seen = _devices_seen(merged)
    assert [seen[2], seen[3], seen[4]] == ["", "", ""]


@pytest.mark.kernel
def test_cli_refuses_a_gpu_step_without_gpus_unless_allow_cpu(tmp_path):
    nb_path = write_nb(
        tmp_path / "one.ipynb", [_cell("x = 1\nprint(x)", "step:train", "limit:gpu:1")]
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}  # this machine: no device
    cmd = [sys.executable, "-m", "jupyter_pipeline.cli", "run", str(nb_path)]
    cmd += ["--store", str(tmp_path / "runs.sqlite")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert "step train (cell 0) asks for 1 GPU" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([*cmd, "--allow-cpu"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
