"""Run and watch from the Pipeline sidebar in a real JupyterLab (real runs, real kernels).

Each test presses Run (or starts a run from a terminal) and asserts what a user sees: states as
words, the log while a step prints, the failing step and its cell, Cancel, the runs list fed by
the event stream. Screenshots of each state go to tests/ui/screenshots/run-*.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import psutil
from labui import (
    Lab,
    copy_example,
    open_notebook,
    open_pipeline_panel,
    press_run,
    run_section,
    screenshot,
    shot_run,
    step_row,
    text_lines,
    write_notebook,
)
from playwright.sync_api import expect

from jupyter_pipeline.store import RunStore

RUN_TIMEOUT_MS = 180_000  # a whole pipeline of fresh kernels on a loaded 2-core machine


def _store(lab: Lab) -> RunStore:
    """The run store the lab's server uses (start_lab sets JUPYTER_PIPELINE_STORE)."""
    return RunStore(lab.root.parent / "store")


def test_run_example_every_step_succeeds_and_values_load(lab: Lab, page) -> None:
    nb = copy_example(lab, "iris_classifier.ipynb")
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    _section, view, run_id = press_run(page)
    steps = ["load-data", "split", "train", "evaluate", "pipeline-metrics"]
    expect(view.locator(".jp-PipelineRunSteps tbody tr")).to_have_count(len(steps))
    # While it runs, the open notebook's cells carry their step's state.
    expect(page.locator(".jp-Notebook .jp-Cell[data-pipeline-run-state]").first).to_be_visible()
    shot_run(page, view, "run-running")
    for step in steps:
        expect(step_row(view, step).locator(".jp-PipelineRunState")).to_have_text(
            "succeeded", timeout=RUN_TIMEOUT_MS
        )
    expect(view.locator(".jp-PipelineRunView-header .jp-PipelineRunState")).to_have_text(
        "succeeded"
    )
    # The graph is coloured by state: every node carries the succeeded colour.
    nodes = view.locator(".jp-PipelineRunGraph .jp-PipelineGraph-node")
    expect(nodes).to_have_count(len(steps))
    assert "success" in (nodes.first.get_attribute("style") or "")
    # The first cell of each step says its state in words.
    marks = page.locator(".jp-Notebook .jp-PipelineCellRunState")
    expect(marks).to_have_count(len(steps))
    expect(marks.first).to_have_text("succeeded")
    # The run started here ends with a notification that links back to the run.
    toast = page.locator(".Toastify__toast").filter(has_text=f"Run {run_id}")
    expect(toast).to_contain_text("succeeded")
    # The sidebar shows this run: the toast goes away soon instead of covering the table.
    expect(toast).to_have_count(0, timeout=15_000)
    # Step names stay on one line (no "load-" / "data").
    names = view.locator(".jp-PipelineRunSteps td.jp-PipelineRunSteps-name").all()
    assert [text_lines(n) for n in names] == [1] * len(steps)
    # Named as tagged, as the graph and the cells name them (the run records `load-data`).
    expect(names[0]).to_have_text("load_data")
    shot_run(page, view, "run-succeeded")

    # Saved values of a step, with type and size; "Load into kernel" adds and runs a cell.
    step_row(view, "split").click()
    outputs = view.locator(".jp-PipelineOutputs")
    expect(outputs.locator('li[data-name="X_train"]')).to_contain_text("pandas.DataFrame")
    expect(outputs.locator('li[data-name="X_train"] .jp-PipelineOutputs-size')).to_contain_text(
        "KB"
    )
    cells_before = page.locator(".jp-Notebook .jp-Cell").count()
    outputs.locator(".jp-PipelineLoadValues").click()
    expect(page.locator(".jp-Notebook .jp-Cell")).to_have_count(cells_before + 1)
    new_cell = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    expect(new_cell).to_contain_text(f'jupyter_pipeline.load_outputs("{run_id}", "split")')
    expect(new_cell.locator(".jp-OutputArea-output")).to_contain_text(
        f"<loaded from run {run_id}, step split: X_test: DataFrame", timeout=120_000
    )

    # The executed step notebook opens read-only in the main area.
    view.locator(".jp-PipelineOpenStep").click()
    tab = page.locator(".jp-PipelineReadOnlyNotebook")
    expect(tab).to_be_visible()
    expect(tab.locator(".jp-Cell").first).to_be_visible()
    expect(tab).to_contain_text("X_train")
    # Typing into it changes nothing.
    editor = tab.locator(".jp-Cell .cm-content").first
    before = editor.text_content()
    editor.click()
    page.keyboard.type("zzz")
    assert editor.text_content() == before
    screenshot(page, "run-executed-notebook")
    assert not [e for e in page.console_errors if "jupyter-pipeline" in e]


def test_log_pane_follows_a_running_step(lab: Lab, page) -> None:
    # The step prints, then runs on until the test has seen what it shows while running (a
    # fixed-length step could end first on a loaded machine): it waits for a release file
    # beside the notebook (a step runs in the notebook's folder).
    release = lab.root / "printing.release"
    release.unlink(missing_ok=True)
    nb = write_notebook(
        lab,
        "printing.ipynb",
        [
            ("code", "import os, time", ["imports"]),
            (
                "code",
                "for i in range(40):\n    print(f'epoch {i} loss {1 / (i + 1):.3f}', flush=True)\n"
                "    time.sleep(0.05)\n"
                "deadline = time.monotonic() + 600\n"
                "while not os.path.exists('printing.release') and time.monotonic() < deadline:\n"
                "    time.sleep(0.1)\n"
                "model = 'trained'",
                ["step:train"],
            ),
            ("code", "print(model)", ["step:report"]),
        ],
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    _section, view, _run_id = press_run(page)
    row = step_row(view, "train")
    try:
        expect(row.locator(".jp-PipelineRunState")).to_have_text("running", timeout=RUN_TIMEOUT_MS)
        log = view.locator('.jp-PipelineLog[data-step="train"] .jp-PipelineLog-text')
        # A printed line shows while the step still runs.
        expect(log).to_contain_text("epoch 3 loss", timeout=60_000)
        assert row.locator(".jp-PipelineRunState").text_content() == "running"
        duration = row.locator(".jp-PipelineRunSteps-duration")
        first = duration.text_content()
        expect(duration).not_to_have_text(first)  # the duration ticks while it runs
        assert row.locator(".jp-PipelineRunState").text_content() == "running"
        shot_run(page, view, "run-log-following")
    finally:
        release.touch()
    expect(row.locator(".jp-PipelineRunState")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    # The whole log stays after the step finished.
    row.click()
    expect(log).to_contain_text("epoch 0 loss 1.000")
    expect(log).to_contain_text("epoch 39 loss")


def test_failed_second_step_and_go_to_cell(lab: Lab, page) -> None:
    nb = write_notebook(
        lab,
        "failing.ipynb",
        [
            ("markdown", "# Fails in its second step", []),
            ("code", "values = [1, 2, 3]", ["step:prepare"]),
            ("code", "total = sum(values)", ["step:compute"]),
            ("code", "ratio = total / (len(values) - 3)", []),
            ("code", "print(ratio)", ["step:report"]),
        ],
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    _section, view, run_id = press_run(page)
    expect(step_row(view, "compute").locator(".jp-PipelineRunState")).to_have_text(
        "failed", timeout=RUN_TIMEOUT_MS
    )
    expect(step_row(view, "prepare").locator(".jp-PipelineRunState")).to_have_text("succeeded")
    expect(step_row(view, "report").locator(".jp-PipelineRunState")).to_have_text("skipped")
    error = view.locator(".jp-PipelineRunError")
    expect(error).to_contain_text("ZeroDivisionError")
    # The failing step's log shows the traceback.
    log = view.locator('.jp-PipelineLog[data-step="compute"] .jp-PipelineLog-text')
    expect(log).to_contain_text("ZeroDivisionError")
    # The finish notification pops up bottom right, over the sidebar; scrolled to its end, the
    # sidebar's log pane ends above it (room below), and the toast closes soon since the
    # sidebar already shows this run.
    toast = page.locator(".Toastify__toast").filter(has_text=f"Run {run_id}")
    expect(toast).to_contain_text("failed")
    panel = page.locator(".jp-PipelinePanel")
    panel.evaluate("e => { e.scrollTop = e.scrollHeight; }")
    toast_box, log_box = toast.bounding_box(), log.bounding_box()
    assert toast_box and log_box
    assert log_box["y"] + log_box["height"] <= toast_box["y"], (log_box, toast_box)
    screenshot(page, "run-failed-notification")
    expect(toast).to_have_count(0, timeout=15_000)
    shot_run(page, view, "run-failed")
    # Select another cell first, so the jump is real.
    page.locator(".jp-Notebook .jp-Cell").nth(1).click()
    error.locator(".jp-PipelineGoToCell").click()
    active = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    expect(active).to_contain_text("ratio = total / (len(values) - 3)")
    expect(page.locator(".jp-Notebook .jp-Cell").nth(3)).to_have_class(re.compile("jp-mod-active"))


def test_cancel_stops_a_long_step_and_leaves_no_process(lab: Lab, page) -> None:
    nb = write_notebook(
        lab,
        "long.ipynb",
        [
            ("code", "import time", ["imports"]),
            ("code", "print('started', flush=True)\ntime.sleep(600)\nx = 1", ["step:long"]),
            ("code", "print(x)", ["step:after"]),
        ],
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    _section, view, run_id = press_run(page)
    expect(view.locator('.jp-PipelineLog[data-step="long"]')).to_contain_text(
        "started", timeout=RUN_TIMEOUT_MS
    )
    store = _store(lab)
    try:
        kernel = store.step_extra(run_id, "long")["kernel_pid"]
        runner = store.runner_of(run_id)[0]
        assert kernel and psutil.pid_exists(kernel)
        view.locator(".jp-PipelineCancel").click()
        expect(view.locator(".jp-PipelineRunView-header .jp-PipelineRunState")).to_have_text(
            "cancelled", timeout=60_000
        )
        expect(step_row(view, "long").locator(".jp-PipelineRunState")).to_have_text("cancelled")
        expect(step_row(view, "after").locator(".jp-PipelineRunState")).to_have_text("cancelled")
        expect(view.locator(".jp-PipelineCancel")).to_have_count(0)
        shot_run(page, view, "run-cancelled")
        deadline = time.monotonic() + 60  # stopping processes takes seconds at load 16
        while time.monotonic() < deadline and (
            _alive(kernel) or (runner is not None and _alive(runner))
        ):
            time.sleep(0.2)
        assert not _alive(kernel), "the step's kernel outlived the cancel"
        assert runner is None or not _alive(runner), "the runner outlived the cancel"
        left = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if run_id in " ".join(p.info["cmdline"] or [])
        ]
        assert left == []
    finally:
        store.close()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_run_started_from_a_terminal_appears_without_reload(lab: Lab, page) -> None:
    nb = write_notebook(
        lab,
        "from_cli.ipynb",
        [
            ("code", "n = 3", ["pipeline-parameters"]),
            ("code", "squares = [i * i for i in range(n)]", ["step:compute"]),
            ("code", "print(sum(squares))", ["step:report"]),
        ],
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    section = run_section(page)
    expect(section.locator(".jp-PipelineRunList")).to_be_attached()
    expect(section.locator(".jp-PipelineRunList li")).to_have_count(0)
    env = {**os.environ, "JUPYTER_PIPELINE_STORE": str(lab.root.parent / "store")}
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_pipeline.cli", "run", nb, "-p", "n=5"],
        cwd=lab.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = section.locator(".jp-PipelineRunList li").first
    expect(row).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(row).to_contain_text("n=5")
    expect(row.locator(".jp-PipelineRunState")).to_have_text("succeeded")
    shot_run(page, section, "run-list-cli")


def _kernel_metadata() -> dict[str, object]:
    """Notebook metadata exactly as JupyterLab writes it once this environment's kernel runs."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return {
        "kernelspec": {"name": "python3", "display_name": spec.display_name, "language": "python"},
        "language_info": dict(IPythonKernel.language_info),
    }


def test_display_does_not_dirty_and_run_asks_to_save_only_after_an_edit(lab: Lab, page) -> None:
    """The extension only displays: analysis, stripes and badges leave the model clean.

    (JupyterLab itself marks a notebook changed when its kernel reports other metadata than the
    file has; that case is Run without a dialog, in the tests above, via press_run.)
    """
    nb = write_notebook(
        lab,
        "clean.ipynb",
        [
            ("code", "n = 2", ["pipeline-parameters"]),
            ("code", "data = list(range(n))", ["step:load-data"]),
            ("code", "print(sum(data))", ["step:report"]),
        ],
        metadata=_kernel_metadata(),
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    section = run_section(page)
    expect(section.locator(".jp-PipelineRunButton")).to_be_enabled(timeout=60_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    expect(cells.nth(1).locator(".jp-PipelineBadge")).to_contain_text("load-data")
    # The kernel has started and reported its metadata (the same as the file's).
    expect(page.locator(".jp-StatusBar-Widget").filter(has_text="Idle").first).to_be_visible()
    page.wait_for_timeout(1000)
    current_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current")
    expect(current_tab).not_to_have_class(re.compile("jp-mod-dirty"))
    # No KFP host is configured in this lab: the cluster is not offered.
    options = section.locator(".jp-PipelineRunTarget select option")
    assert options.evaluate_all("os => os.map(o => o.value)") == ["local"]

    # A real edit: now Run asks to save first, and Cancel starts nothing.
    cells.nth(2).locator(".cm-content").click()
    page.keyboard.press("End")
    page.keyboard.type("  # edited")
    expect(current_tab).to_have_class(re.compile("jp-mod-dirty"))
    section.locator(".jp-PipelineRunButton").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Save before running?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(section.locator(".jp-PipelineRunView")).to_have_count(0)
    expect(section.locator(".jp-PipelineRunList li")).to_have_count(0)
    expect(current_tab).to_have_class(re.compile("jp-mod-dirty"))
