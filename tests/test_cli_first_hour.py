"""Noise a new user sees: kernel chatter, interrupts at shutdown, broken pipes (``| head``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import code_cell as _cell
from helpers import write_nb

from jupyter_pipeline.cli import main

EXE = Path(sys.executable).with_name("jupyter-pipeline")

# Records a SIGINT the kernel gets while idle: ipykernel restores its own SIGINT handling after
# every request, through post_handler_hook, so the cell makes that hook install a recorder.
_RECORD_SIGINT = """\
import signal
def _record(*_):
    with open({marker!r}, "a") as f:
        f.write("SIGINT\\n")
get_ipython().kernel.post_handler_hook = lambda: signal.signal(signal.SIGINT, _record)
"""


@pytest.mark.kernel
@pytest.mark.parametrize("fails", [True, False])
def test_step_kernel_is_not_interrupted_at_shutdown(tmp_path, capsys, fails):
    # jupyter_client interrupts a kernel before asking it to shut down; ipykernel then logs
    # "KeyboardInterrupt caught in kernel." into the step's log (after a failure, typically).
    marker = tmp_path / "sigint.txt"
    last = "raise ValueError('boom')" if fails else "print('fine')"
    nb = write_nb(
        tmp_path / "nb.ipynb",
        [_cell(_RECORD_SIGINT.format(marker=str(marker)) + "x = 1", "step:a"), _cell(last)],
    )
    store = tmp_path / "runs.sqlite"
    code = main(["run", str(nb), "--store", str(store), "--no-prewarm"])
    assert code == (1 if fails else 0), capsys.readouterr()
    logs = list((tmp_path / "runs").rglob("log.txt"))
    assert logs
    assert not any("KeyboardInterrupt" in p.read_text() for p in logs)
    assert not marker.exists(), "the step kernel got a SIGINT while shutting down"


@pytest.mark.kernel
def test_verify_prints_no_kernel_chatter(tmp_path):
    marker = tmp_path / "sigint.txt"
    nb = write_nb(
        tmp_path / "nb.ipynb",
        [_cell(_RECORD_SIGINT.format(marker=str(marker)) + "x = 1", "step:a"), _cell("print(x)")],
    )
    env = dict(os.environ, NO_COLOR="1")
    res = subprocess.run(
        [str(EXE), "verify", str(nb), "--store", str(tmp_path / "runs.sqlite"), "--no-prewarm"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all 2 code cells give the same output" in res.stdout
    assert "IPKernelApp" not in res.stdout + res.stderr  # "Kernel is running over TCP …"
    assert not marker.exists(), "the straight run's kernel got a SIGINT while shutting down"


# ----------------------------------------------------------------------------- verify -p


@pytest.mark.kernel
@pytest.mark.parametrize("tag", ["pipeline-parameters", "parameters"])
def test_verify_gives_the_straight_run_the_same_parameters(tmp_path, capsys, tag):
    # papermill injects only after a `parameters` cell; Kale's pipeline-parameters cells (the
    # shipped examples) kept their defaults in the straight run: false differences.
    nb = write_nb(
        tmp_path / "nb.ipynb",
        [
            _cell("C = 1.0\nname = 'a'", tag),
            _cell("print('C is', C, name)", "step:first"),
            _cell("k = 2", "pipeline-parameters"),  # a second parameters cell, further down
            _cell("print('k is', k, C * k)", "step:second"),
        ],
    )
    store = str(tmp_path / "runs.sqlite")
    keep = tmp_path / "kept"
    argv = ["verify", str(nb), "-p", "C=0.01", "-p", "k=5", "--store", store, "--keep", str(keep)]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "all 4 code cells give the same output" in out
    import nbformat

    straight = nbformat.read(str(keep / "straight.ipynb"), as_version=4)
    printed = [o["text"] for c in straight.cells for o in c.get("outputs", []) if "text" in o]
    assert printed == ["C is 0.01 a\n", "k is 5 0.05\n"]
    assert straight.metadata.papermill.parameters == {"C": 0.01, "k": 5}


# ----------------------------------------------------------------------------- broken pipes


def _closed_stdout(*argv: str) -> subprocess.CompletedProcess:
    """Run the CLI with its stdout a pipe whose reader is already gone (``| head``, early)."""
    proc = subprocess.Popen(
        [str(EXE), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return subprocess.CompletedProcess(proc.args, proc.wait(timeout=300), "", err)


def test_analyze_into_a_closed_pipe_stops_quietly_with_0(tmp_path):
    nb = write_nb(tmp_path / "nb.ipynb", [_cell("x = 1", "step:a"), _cell("print(x)", "step:b")])
    for fmt in ([], ["--json"], ["--dot"], ["--mermaid"]):
        res = _closed_stdout("analyze", str(nb), *fmt)
        assert (res.returncode, res.stderr) == (0, ""), fmt


@pytest.mark.kernel
def test_run_and_runs_into_a_closed_pipe_stop_quietly(tmp_path):
    store = str(tmp_path / "runs.sqlite")
    bad = write_nb(tmp_path / "bad.ipynb", [_cell("raise ValueError('boom')", "step:a")])
    res = _closed_stdout("run", str(bad), "--json", "--store", store, "--no-prewarm")
    # no traceback; the failed run still exits 1
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr
    for argv in (["runs", "--json"], ["runs"]):
        res = _closed_stdout(*argv, "--store", store)
        assert (res.returncode, res.stderr) == (0, ""), argv
    run_id = json.loads(subprocess.check_output([str(EXE), "runs", "--json", "--store", store]))[0][
        "id"
    ]
    for argv in (["show", run_id], ["show", run_id, "--json"]):
        res = _closed_stdout(*argv, "--store", store)
        assert (res.returncode, res.stderr) == (0, ""), argv


# ----------------------------------------------------------------------------- kfp


def test_kfp_is_a_regular_dependency_with_the_toolchain_pins():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert {"kfp==2.17.0", "kfp-kubernetes==2.17.0"} <= set(project["dependencies"])
    # `pip install jupyter-pipeline[kfp]` (the old spelling) still resolves without a warning
    assert project["optional-dependencies"]["kfp"] == []


# Imports of kfp (or of protobuf's `google`, the original failure) fail as if not installed.
_WITHOUT_KFP = """\
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Missing())
from jupyter_pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("blocked", [["google"], ["kfp"]])
def test_compile_without_kfp_is_one_line_not_a_traceback(tmp_path, blocked):
    write_nb(tmp_path / "nb.ipynb", [_cell("x = 1", "step:a"), _cell("print(x)", "step:b")])
    res = subprocess.run(
        [sys.executable, "-c", _WITHOUT_KFP.format(blocked=set(blocked)), "compile", "nb.ipynb"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "kfp==2.17.0" in lines[0] and f"No module named '{blocked[0]}'" in lines[0]
    assert not (tmp_path / "nb.yaml").exists()


# ----------------------------------------------------------------------------- image


def test_image_lists_known_packages_not_installed_here_and_warns_for_the_rest(tmp_path):
    import importlib.metadata as md

    # Written elsewhere: this environment lacks these (known) packages and the unknown one.
    missing = {"cv2": "opencv-python", "xgboost": "xgboost", "torch": "torch"}
    have = md.packages_distributions()
    assert not set(missing) & set(have), "the test needs modules not installed here"
    (tmp_path / "my_helpers.py").write_text("X = 1\n")  # the notebook's own module
    write_nb(
        tmp_path / "nb.ipynb",
        [
            _cell("import cv2, torch\nimport numpy as np\nfrom xgboost import XGBClassifier"),
            _cell("import my_helpers\nimport surely_unknown_pkg_xyz\nfrom sklearn import svm"),
        ],
    )
    res = subprocess.run(
        [str(EXE), "image", "nb.ipynb", "-o", "img"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, NO_COLOR="1"),
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = [
        line
        for line in (tmp_path / "img" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    note = "  # not installed where this file was written: unpinned"
    assert lines[1:] == [
        f"numpy=={md.version('numpy')}",
        f"scikit-learn=={md.version('scikit-learn')}",
        "opencv-python" + note,
        "torch" + note,
        "xgboost" + note,
    ]
    err = res.stderr.splitlines()
    assert err == [
        "note: opencv-python, torch, xgboost are not installed here: listed unpinned; pin the "
        "versions the notebook was written with",
        "warning: nb.ipynb imports surely_unknown_pkg_xyz, not installed here and of unknown "
        "distribution: nothing listed; add the package(s) to img/requirements.txt",
    ]


@pytest.mark.kernel
def test_run_of_an_untagged_notebook_split_in_two_says_why(tmp_path, capsys):
    nb = write_nb(
        tmp_path / "nb.ipynb",
        [_cell("x = 1"), _cell("n = 3", "parameters"), _cell("print(x + n)")],
    )
    code = main(["run", str(nb), "--store", str(tmp_path / "runs.sqlite"), "--no-prewarm"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "main-2: succeeded" in out
    assert err == (
        f"{nb}: cell 2: info: no step: tags, so the notebook is one step 'main', split where "
        "the parameters cell runs: the cells after it are step 'main-2' [step-split]\n"
    )
