"""KFP runs in the Pipeline sidebar of a real JupyterLab.

No Kubeflow cluster can run here, so the lab's server is configured with
``tests/kfp_standin.py`` as its KFP host: the project's one allowed stand-in, a local HTTP
server speaking the KFP v2beta1 REST API (it records what it is sent and runs nothing). The
test drives the stand-in's run state by state (``auto_advance=False``, ``advance()``) and
asserts what the sidebar shows: the kfp target, the run's steps following the cluster's task
states (through the real watcher process polling the stand-in), the KFP UI link, Cancel
terminating the run on the cluster, Re-run submitting again. Everything else is real: the
server extension, kfp's compiler and client, the run store and its event stream, Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from labui import (
    Lab,
    open_notebook,
    open_pipeline_panel,
    press_run,
    shot_run,
    start_lab,
    step_row,
    text_lines,
    widen_right_sidebar,
    write_notebook,
)
from playwright.sync_api import expect

from tests.kfp_standin import KfpStandIn

STEPS = ["load-raw-data-from-warehouse", "train-model", "report"]


@pytest.fixture(scope="module")
def kfp() -> Iterator[KfpStandIn]:
    """The KFP REST stand-in (tests/kfp_standin.py); runs advance only when the test says."""
    with KfpStandIn(auto_advance=False) as standin:
        yield standin


@pytest.fixture(scope="module")
def kfp_lab(tmp_path_factory: pytest.TempPathFactory, kfp: KfpStandIn) -> Iterator[Lab]:
    """A ``jupyter lab`` whose server extension has the stand-in as its KFP host."""
    args = [f"--PipelineApp.kfp_host={kfp.url}", "--PipelineApp.kfp_poll_interval=0.1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("KF_PIPELINES_ENDPOINT", raising=False)  # the configured host is the one used
        with start_lab(tmp_path_factory.mktemp("kfp-lab"), args) as server:
            yield server


def _state(view, step: str | None = None):
    if step is None:
        return view.locator(".jp-PipelineRunView-header .jp-PipelineRunState")
    return step_row(view, step).locator(".jp-PipelineRunState")


def _expect_states(view, *states: str) -> None:
    for step, state in zip(STEPS, states, strict=True):
        expect(_state(view, step)).to_have_text(state)


def test_kfp_run_follows_the_cluster_links_to_its_ui_and_cancels(
    kfp: KfpStandIn, kfp_lab: Lab, page
) -> None:
    nb = write_notebook(
        kfp_lab,
        "on_kfp.ipynb",
        [
            ("code", "n = 3", ["pipeline-parameters"]),
            ("code", "raw = list(range(n))", [f"step:{STEPS[0]}"]),
            ("code", "model = sum(raw)", [f"step:{STEPS[1]}"]),
            ("code", "print(model)", [f"step:{STEPS[2]}"]),
        ],
    )
    open_notebook(kfp_lab, page, nb)
    open_pipeline_panel(page)
    # A KFP host is configured: the target selector offers the cluster.
    select = page.locator(".jp-PipelineRunTarget select")
    expect(select.locator("option")).to_have_count(2)
    assert select.locator("option").evaluate_all("os => os.map(o => o.value)") == ["local", "kfp"]
    _section, view, run_id = press_run(page, target="kfp")

    # Submitted to the cluster; nothing has started there yet.
    assert len(kfp.runs) == 1
    external = next(iter(kfp.runs))
    (sent,) = kfp.sent("POST", "/apis/v2beta1/runs")
    assert sent["body"]["runtime_config"]["parameters"] == {"n": 3}
    expect(view.locator(".jp-PipelineRunView-meta")).to_contain_text("Kubeflow Pipelines")
    link = view.locator(".jp-PipelineRunView-actions .jp-PipelineKfpLink")
    expect(link).to_have_attribute("href", kfp.ui_url(external))
    expect(link).to_have_attribute("target", "_blank")
    # A step's log lives in its pod: the step detail says so and links to the run there.
    logs = view.locator(".jp-PipelineKfpLogs")
    expect(logs).to_contain_text("in the Kubeflow UI")
    expect(logs.locator("a")).to_have_attribute("href", kfp.ui_url(external))
    expect(view.locator(".jp-PipelineLog")).to_have_count(0)
    _expect_states(view, "queued", "queued", "queued")

    # The steps follow the cluster's task states, as the watcher polls them.
    assert kfp.advance(external)["run"] == "RUNNING"  # first task pending
    assert kfp.advance(external)[STEPS[0]] == "RUNNING"
    expect(_state(view)).to_have_text("running")
    _expect_states(view, "running", "queued", "queued")
    kfp.advance(external)  # first succeeded, second pending
    assert kfp.advance(external)[STEPS[1]] == "RUNNING"
    _expect_states(view, "succeeded", "running", "queued")

    # A long step name stays on one line, cut with an ellipsis, whole in its tooltip.
    name = step_row(view, STEPS[0]).locator(".jp-PipelineRunSteps-name")
    expect(name).to_have_attribute("title", STEPS[0])
    assert text_lines(name) == 1
    assert name.evaluate("e => e.scrollWidth > e.clientWidth")  # cut: the ellipsis shows
    # Screenshots for the README with a wider sidebar, as one would drag it for a long name.
    panel = page.locator(".jp-PipelinePanel")
    width = panel.bounding_box()["width"]
    widen_right_sidebar(page, 160)
    assert panel.bounding_box()["width"] > width + 100
    # Now the whole name fits: no ellipsis.
    page.wait_for_function("e => e.scrollWidth <= e.clientWidth", arg=name.element_handle())
    shot_run(page, view, "run-kfp-running")

    # The runs list says where the run runs.
    view.locator(".jp-PipelineRunView-back").click()
    row = page.locator(f'.jp-PipelineRunList li[data-run="{run_id}"]')
    expect(row.locator(".jp-PipelineRunRow-target")).to_have_text("kfp")
    row.locator("button").click()

    # Cancel terminates the run on the cluster; the rest of it is cancelled.
    view.locator(".jp-PipelineCancel").click()
    expect(_state(view)).to_have_text("cancelled")
    assert kfp.sent("POST", f"/apis/v2beta1/runs/{external}:terminate")
    _expect_states(view, "succeeded", "cancelled", "cancelled")
    expect(view.locator(".jp-PipelineCancel")).to_have_count(0)
    # The cluster still says CANCELING (its tasks still run) for a while: the watcher must not
    # turn the cancelled run back into a running one.
    page.wait_for_timeout(1500)
    expect(_state(view)).to_have_text("cancelled")
    _expect_states(view, "succeeded", "cancelled", "cancelled")
    recorded = kfp_lab.api(f"jupyter-pipeline/runs/{run_id}")
    assert recorded["state"] == "cancelled", recorded  # type: ignore[index]
    assert [s["state"] for s in recorded["steps"]] == ["succeeded", "cancelled", "cancelled"]  # type: ignore[index]
    assert kfp.advance(external)["run"] == "CANCELED"

    # Re-run submits the same notebook and parameters to the cluster again.
    view.locator(".jp-PipelineRerun").click()
    expect(view).not_to_have_attribute("data-run", run_id)
    assert len(kfp.runs) == 2
    second = list(kfp.runs)[-1]
    expect(view.locator(".jp-PipelineRunView-actions .jp-PipelineKfpLink")).to_have_attribute(
        "href", kfp.ui_url(second)
    )
    # Three tasks one after another: queued, running, succeeded each, as the watcher sees it.
    kfp.advance(second)
    for step in STEPS:
        assert kfp.advance(second)[step] == "RUNNING"
        expect(_state(view, step)).to_have_text("running")
        # The stand-in stamps each change with the time it is made: give the step a duration
        # that shows (0.05 s or less prints as "0.0s" when the watcher is quick).
        page.wait_for_timeout(300)
        states = kfp.advance(second)
        assert states[step] == "SUCCEEDED"
        expect(_state(view, step)).to_have_text("succeeded")
    assert states["run"] == "SUCCEEDED"
    expect(_state(view)).to_have_text("succeeded")
    _expect_states(view, "succeeded", "succeeded", "succeeded")
    durations = view.locator(".jp-PipelineRunSteps-duration").all_inner_texts()
    assert all(d.endswith("s") and d != "0.0s" for d in durations[1:]), durations
    # The run this browser started ends with a notification (soon gone: the view shows it).
    toast = page.locator(".Toastify__toast").filter(
        has_text=f"Run {view.get_attribute('data-run')}"
    )
    expect(toast).to_contain_text("succeeded")
    expect(toast).to_have_count(0, timeout=15_000)
    shot_run(page, view, "run-kfp-succeeded")
