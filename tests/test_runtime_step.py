"""Step runtime with real kernels: build, run (papermill), pass data, fail well, pre-warm, merge."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from helpers import gone_within, stream_text
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_pipeline.model import Definition, Parameter, Pipeline, Step
from jupyter_pipeline.runtime import (
    StepExecutionError,
    StepRequest,
    build_step_notebook,
    kill_kernel,
    merge_outputs,
    run_step,
    save_value,
)
from jupyter_pipeline.runtime.serializers import value_dirname

pytestmark = pytest.mark.kernel

CLASS_SRC = "class Box:\n    def __init__(self, v):\n        self.v = v"
IMPORTS = [
    Definition(cell=1, kind="import", names=["random"], source="import random"),
    Definition(cell=1, kind="import", names=["np"], source="import numpy as np"),
]


def request(nb, pipeline, step, tmp, **kw):
    """A StepRequest for ``step`` with its outputs under ``tmp/<step>``."""
    s = pipeline.step(step)
    kw.setdefault("outputs", s.outputs + ["__state__:" + x for x in s.state_outputs])
    return StepRequest(
        step_notebook=build_step_notebook(nb, pipeline, step),
        step=step,
        output_dir=str(tmp / step / "out"),
        executed_notebook=str(tmp / step / "executed.ipynb"),
        log_path=str(tmp / step / "log.txt"),
        cwd=str(tmp),
        **kw,
    )


def inputs_of(tmp, producer, names):
    return {n: str(tmp / producer / "out" / value_dirname(n)) for n in names}


# ------------------------------------------------------------------------------------------
# A two-step pipeline run once for several tests.
# ------------------------------------------------------------------------------------------

SOURCE = new_notebook(
    cells=[
        new_code_cell("n = 3", metadata={"tags": ["pipeline-parameters"]}),
        new_code_cell(
            "import random\nimport numpy as np\n"
            "random.seed(n)\nnp.random.seed(n)\n"
            "a = [random.random() for _ in range(n)]\nb = a\nd = {'inner': a}\n"
            "arr = np.random.rand(n)\n" + CLASS_SRC + "\nbox = Box(a)\nprint('made', len(a))\n"
            "import os\nos.system('echo from-a-subprocess')\n"
            "if n < 0:\n    maybe = 1",
            metadata={"tags": ["step:make"]},
        ),
        new_markdown_cell("## consume"),
        new_code_cell(
            "b.append(1.0)\n"
            "print(len(a), d['inner'] is a, box.v is a, isinstance(box, Box))\n"
            "print(repr(random.random()), repr(float(np.random.rand())))",
            metadata={"tags": ["step:use"]},
        ),
        new_code_cell("print('never run')", metadata={"tags": ["skip"]}),
    ]
)
PIPELINE = Pipeline(
    name="p",
    notebook="source.ipynb",
    parameters=[Parameter(name="n", default=3, type="int", cell=0, source="n = 3")],
    steps=[
        Step(
            name="make",
            display_name="make",
            cells=[1],
            outputs=["a", "arr", "b", "box", "d", "maybe"],
            parameters=["n"],
            state_outputs=["random", "numpy.random"],
            definitions=IMPORTS,
        ),
        Step(
            name="use",
            display_name="use",
            cells=[2, 3],
            inputs=["a", "b", "box", "d"],
            input_sources=dict.fromkeys(["a", "b", "box", "d"], "make"),
            state_inputs={"random": "make", "numpy.random": "make"},
            definitions=[*IMPORTS, Definition(cell=1, line=8, kind="class", source=CLASS_SRC)],
        ),
    ],
)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    make = run_step(request(SOURCE, PIPELINE, "make", tmp, parameters={"n": 5, "other": 1}))
    names = ["a", "b", "box", "d", "__state__:random", "__state__:numpy.random"]
    use = run_step(
        request(SOURCE, PIPELINE, "use", tmp, inputs=inputs_of(tmp, "make", names)),
    )
    return tmp, make, use


def straight_run_draws(n):
    """What one kernel running the notebook top to bottom would print in the consumer."""
    state, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(n)
        np.random.seed(n)
        [random.random() for _ in range(n)]
        np.random.rand(n)
        return repr(random.random()), repr(float(np.random.rand()))
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def stdout_of(nb_path, source_cell):
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("jupyter_pipeline", {}).get("source_cell") == source_cell:
            return stream_text(cell)
    raise AssertionError(f"no cell mapped to {source_cell}")


def test_build_step_notebook_layout():
    nb = build_step_notebook(SOURCE, PIPELINE, "use")
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags[0] == ["parameters"] and nb.cells[0].source == ""
    assert tags[1] == ["jupyter-pipeline-definitions"]
    assert "import numpy as np" in nb.cells[1].source and "class Box" in nb.cells[1].source
    assert tags[2] == ["jupyter-pipeline-load"]
    assert [c.metadata["jupyter_pipeline"]["source_cell"] for c in nb.cells[3:5]] == [2, 3]
    assert [c.id for c in nb.cells[3:5]] == [SOURCE.cells[2].id, SOURCE.cells[3].id]
    assert nb.cells[3].cell_type == "markdown"
    assert tags[5] == ["jupyter-pipeline-save"]
    nbformat.validate(nb)
    make = build_step_notebook(SOURCE, PIPELINE, "make")
    assert make.cells[0].source == "n = 3"
    assert SOURCE.cells[1].metadata == {"tags": ["step:make"]}  # source untouched


def test_outputs_saved_with_digests_and_parameter_injected(two_steps):
    tmp, make, _ = two_steps
    assert make.status == "succeeded", make.failure
    saved = {o.name: o for o in make.outputs}
    assert set(saved) == {"a", "arr", "b", "box", "d", "__state__:random", "__state__:numpy.random"}
    assert saved["arr"].serializer == "npy"
    assert saved["b"].serializer == "alias" and saved["b"].digest == saved["a"].digest
    digests = {o.digest.split(":")[0] for o in make.outputs}
    assert digests <= {"xxh3_128", "sha256"} and all(o.size > 0 for o in make.outputs)
    assert stdout_of(make.executed_notebook, 1) == "made 5\n"  # -p n=5 reached the kernel
    nb = nbformat.read(make.executed_notebook, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "n = 5" in injected[0].source and "other" not in injected[0].source
    log = Path(tmp / "make" / "log.txt").read_text()
    assert "made 5" in log
    assert "from-a-subprocess" in log  # the kernel process's own output too
    assert "WARNING" not in log  # ipykernel's start-up chatter stays out


def test_undefined_output_is_skipped(two_steps):
    tmp, make, _ = two_steps
    assert "maybe" not in {o.name for o in make.outputs}  # its branch did not run
    assert not (tmp / "make" / "out" / "maybe").exists()


def test_generated_cells_print_nothing(two_steps):
    _, make, use = two_steps
    for result in (make, use):
        nb = nbformat.read(result.executed_notebook, as_version=4)
        generated = [c for c in nb.cells if "generated" in c.metadata.get("jupyter_pipeline", {})]
        assert len(generated) == 4
        for cell in generated:
            assert cell.get("outputs") == [], cell.source


def test_aliases_classes_and_rng_state_carried(two_steps):
    _, _, use = two_steps
    assert use.status == "succeeded", use.failure
    lines = stdout_of(use.executed_notebook, 3).splitlines()
    # b.append changed a; d and box share it; box is an instance of the replayed Box.
    assert lines[0] == "6 True True True"
    assert tuple(lines[1].split()) == straight_run_draws(5)


def test_merge_outputs(two_steps):
    _, make, use = two_steps
    source = nbformat.from_dict(json.loads(json.dumps(SOURCE)))
    source.cells[4].outputs = [nbformat.v4.new_output("stream", text="stale\n")]
    before = json.dumps(source, sort_keys=True)
    executed = {r.step: nbformat.read(r.executed_notebook, as_version=4) for r in (make, use)}
    merged = merge_outputs(source, executed)
    assert json.dumps(source, sort_keys=True) == before  # input untouched
    assert len(merged.cells) == len(source.cells)
    assert [c.id for c in merged.cells] == [c.id for c in source.cells]
    assert stream_text(merged.cells[1]) == "made 5\n"
    assert stream_text(merged.cells[3]).startswith("6 True True True")
    assert merged.cells[3].execution_count == next(
        c.execution_count for c in executed["use"].cells if c.id == source.cells[3].id
    )
    assert merged.cells[0].outputs == [] and merged.cells[4].outputs == []  # never ran
    assert merged.cells[2].cell_type == "markdown"


# ------------------------------------------------------------------------------------------
# Failures
# ------------------------------------------------------------------------------------------


def one_step(cells, **step):
    nb = new_notebook(cells=[new_code_cell(src) for src in cells])
    step.setdefault("cells", list(range(len(cells))))
    return nb, Pipeline(
        name="p", notebook="nb.ipynb", steps=[Step(name="s", display_name="s", **step)]
    )


def test_failing_cell_reports_source_cell_and_saves_notebook(tmp_path):
    nb, pipeline = one_step(["x = 1", "print('before')", "y = x / 0", "print('after')"])
    result = run_step(request(nb, pipeline, "s", tmp_path, outputs=["x"]))
    assert result.status == "failed"
    f = result.failure
    assert (f.step, f.cell, f.ename, f.evalue) == ("s", 2, "ZeroDivisionError", "division by zero")
    assert f.message == "step s failed in cell 2: ZeroDivisionError: division by zero"
    assert any("y = x / 0" in line for line in f.traceback)
    assert not any("\x1b[" in line for line in f.traceback)
    executed = nbformat.read(result.executed_notebook, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.output_type == "error" and o.ename == "ZeroDivisionError" for o in errors)
    assert stdout_of(result.executed_notebook, 1) == "before\n"
    assert stdout_of(result.executed_notebook, 3) == ""  # stopped at the error, like papermill
    assert result.outputs == [] and "ZeroDivisionError" in Path(tmp_path / "s/log.txt").read_text()


def test_unserializable_output_fails_naming_variable(tmp_path):
    nb, pipeline = one_step(
        ["import threading\nok = [1]\ngen = (i for i in range(3))"], outputs=["gen", "ok"]
    )
    result = run_step(request(nb, pipeline, "s", tmp_path))
    f = result.failure
    assert result.status == "failed" and f.cell is None and f.ename == "UnserializableValue"
    assert "'gen'" in f.message and "generator" in f.message
    assert "Recompute it in the consuming step, or tag these cells into one step" in f.message
    assert f.message.startswith("step s: cannot pass variable 'gen'")


def test_missing_input_is_a_load_error_and_check_raises(tmp_path):
    nb, pipeline = one_step(["print(x)"], inputs=["x"])
    req = request(nb, pipeline, "s", tmp_path, inputs={"x": str(tmp_path / "nowhere" / "x")})
    with pytest.raises(StepExecutionError) as info:
        run_step(req, check=True)
    f = info.value.failure
    assert f.cell is None and f.message.startswith("step s failed loading its inputs:")
    assert "'x'" in f.message
    assert Path(req.executed_notebook).exists()


def test_definition_error_points_at_its_source_cell(tmp_path):
    defs = [
        Definition(cell=0, kind="import", names=["os"], source="import os"),
        Definition(cell=4, line=2, kind="import", names=["nope"], source="import nope_not_here"),
    ]
    nb, pipeline = one_step(["print(1)"], definitions=defs)
    result = run_step(request(nb, pipeline, "s", tmp_path))
    f = result.failure
    assert (f.cell, f.ename) == (4, "ModuleNotFoundError")
    assert f.message.startswith("step s failed replaying its imports and definitions (from cell 4)")


# ------------------------------------------------------------------------------------------
# Pre-warming, kernel pid, cancel
# ------------------------------------------------------------------------------------------


def test_prewarm_runs_definitions_before_ready(tmp_path):
    value_dir = tmp_path / "given" / "x"
    save_value([41], str(value_dir), "x")
    defs = [
        Definition(
            cell=0,
            kind="state",
            source="import time, pathlib\npathlib.Path('defs.txt').write_text(repr(time.time()))",
        )
    ]
    nb, pipeline = one_step(["x.append(1)\nprint(sum(x))"], inputs=["x"], definitions=defs)
    seen = {}

    def ready():
        seen["ready_at"] = time.time()
        seen["defs_done"] = (tmp_path / "defs.txt").exists()
        return {"x": str(value_dir)}

    pids = []
    result = run_step(request(nb, pipeline, "s", tmp_path), ready=ready, on_kernel=pids.append)
    assert result.status == "succeeded", result.failure
    assert seen["defs_done"]
    assert float((tmp_path / "defs.txt").read_text()) <= seen["ready_at"]
    assert stdout_of(result.executed_notebook, 0) == "42\n"
    assert len(pids) == 1
    with pytest.raises(ProcessLookupError):  # the kernel was shut down
        os.kill(pids[0], 0)


def test_ready_raising_aborts_and_keeps_notebook(tmp_path):
    nb, pipeline = one_step(["print('never')"])
    pids = []

    def ready():
        raise RuntimeError("cancelled while warming")

    req = request(nb, pipeline, "s", tmp_path)
    with pytest.raises(RuntimeError, match="cancelled while warming"):
        run_step(req, ready=ready, on_kernel=pids.append)
    assert Path(req.executed_notebook).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_aborted_warm_up_does_not_replace_a_notebook_already_there(tmp_path):
    # The runner copies a cached step's executed notebook while that step's warm-up stops.
    nb, pipeline = one_step(["print('never')"])
    req = request(nb, pipeline, "s", tmp_path)
    Path(req.executed_notebook).parent.mkdir(parents=True, exist_ok=True)
    Path(req.executed_notebook).write_text("cached copy")

    def ready():
        raise RuntimeError("cache hit")

    with pytest.raises(RuntimeError, match="cache hit"):
        run_step(req, ready=ready)
    assert Path(req.executed_notebook).read_text() == "cached copy"


def test_kill_kernel_stops_kernel_and_children(tmp_path):
    nb, pipeline = one_step(
        [
            "import subprocess, pathlib, time\n"
            "child = subprocess.Popen(['sleep', '120'])\n"
            "pathlib.Path('child.pid').write_text(str(child.pid))\n"
            "time.sleep(120)"
        ]
    )
    pid_file = tmp_path / "child.pid"

    def cancel_when_child_runs(pid):
        def wait_and_kill():
            # The kernel may take many seconds to run its cell on a loaded machine.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if pid_file.exists() and pid_file.read_text():
                    break
                time.sleep(0.05)
            kill_kernel(pid)

        threading.Thread(target=wait_and_kill, daemon=True).start()

    result = run_step(request(nb, pipeline, "s", tmp_path), on_kernel=cancel_when_child_runs)
    assert result.status == "failed" and result.failure.cell == 0
    assert result.failure.ename == "DeadKernelError"
    child = int(pid_file.read_text())
    # Reaped by init once killed: give it a moment (a zombie awaiting init counts as gone).
    assert gone_within(child), "child process of the kernel survived"
    assert Path(result.executed_notebook).exists()


def test_html_export_and_metrics(tmp_path):
    nb = new_notebook(
        cells=[new_code_cell("import numpy as np\nacc = np.float64(0.75)\nok = True")]
    )
    pipeline = Pipeline(
        name="p",
        notebook="nb.ipynb",
        steps=[
            Step(
                name="m", display_name="m", role="metrics", cells=[0], metrics=["acc", "ok", "gone"]
            )
        ],
    )
    result = run_step(request(nb, pipeline, "m", tmp_path, html=True))
    assert result.status == "succeeded", result.failure
    assert result.metrics == {"acc": 0.75, "ok": True}
    assert json.loads((tmp_path / "m" / "out" / "metrics.json").read_text()) == result.metrics
    assert result.html and Path(result.html).read_text().lstrip().lower().startswith(
        "<!doctype html"
    )


def test_parallel_steps_in_threads_do_not_leak(tmp_path):
    nb, pipeline = one_step(["import os\nwhere = os.getcwd()\nprint(where)"], outputs=["where"])
    fds = len(os.listdir("/proc/self/fd"))
    results = {}

    def work(name):
        (tmp_path / name).mkdir()
        req = request(nb, pipeline, "s", tmp_path / name)
        results[name] = run_step(req)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert results[name].status == "succeeded", results[name].failure
        # cwd is per kernel (not a process-wide chdir): each sees its own folder
        assert stdout_of(results[name].executed_notebook, 0) == f"{tmp_path / name}\n"
    assert len(os.listdir("/proc/self/fd")) <= fds


def test_on_kernel_raising_does_not_leak_the_kernel(tmp_path):
    nb, pipeline = one_step(["print('never')"])
    pids = []

    def on_kernel(pid):
        pids.append(pid)
        raise RuntimeError("runner refused the kernel")

    with pytest.raises(RuntimeError, match="refused"):
        run_step(request(nb, pipeline, "s", tmp_path), on_kernel=on_kernel)
    # Its shutdown may take seconds on a loaded machine; a zombie awaiting its reaper is gone.
    assert gone_within(pids[0]), "kernel left running"
