"""The Pipeline sidebar in a real JupyterLab: steps, the labelled graph, diagnostics, the hint."""

from __future__ import annotations

import json
import re

from labui import (
    Lab,
    copy_example,
    open_notebook,
    open_pipeline_panel,
    screenshot,
    start_lab,
    write_notebook,
)
from playwright.sync_api import expect


def test_sidebar_shows_steps_and_labelled_edges(lab: Lab, page) -> None:
    nb = copy_example(lab, "iris_classifier.ipynb")
    open_notebook(lab, page, nb)
    panel = open_pipeline_panel(page)

    steps = panel.locator(".jp-PipelineStep")
    expect(steps).to_have_count(5)
    names = [s.get_attribute("data-step") for s in steps.all()]
    assert names == ["load-data", "split", "train", "evaluate", "pipeline-metrics"]
    # Inputs and outputs as the analysis gives them.
    train = panel.locator('.jp-PipelineStep[data-step="train"]')
    expect(train).to_contain_text("X_train")
    expect(train).to_contain_text("model")

    # The graph: one node per step, the split -> train edge labelled with its variables and
    # carrying the analysis' reason as its tooltip.
    graph = panel.locator(".jp-PipelineGraph svg")
    expect(graph.locator(".jp-PipelineGraph-node")).to_have_count(5)
    edge = graph.locator('.jp-PipelineGraph-edge[data-source="split"][data-target="train"]')
    expect(edge.locator(".jp-PipelineGraph-edgeLabel text")).to_have_text("X_train, y_train")
    assert "X_train" in edge.locator("title").text_content()

    # Each code cell carries a badge: the step's tagged cells by name, role cells by role.
    badges = page.locator(".jp-Notebook .jp-PipelineBadge")
    expect(badges.first).to_be_visible()
    expect(page.locator('.jp-PipelineBadge[data-kind="imports"]')).to_have_count(1)
    expect(page.locator('.jp-PipelineBadge[data-kind="parameters"]')).to_have_count(1)
    expect(
        page.locator('.jp-PipelineBadge[data-tagged="true"]').filter(has_text="load_data")
    ).to_have_count(1)

    # Parameters form with typed inputs and the notebook's defaults.
    params = panel.locator(".jp-PipelineParameter")
    expect(params).to_have_count(4)
    expect(panel.locator("#jp-pipeline-param-test_size")).to_have_value("0.3")

    # Clicking a step in the graph selects its first cell.
    graph.locator('.jp-PipelineGraph-node[data-step="train"]').click()
    active = page.locator(".jp-Notebook .jp-Cell.jp-mod-active")
    expect(active).to_contain_text("LogisticRegression")
    screenshot(page, "sidebar-iris")
    assert not [e for e in page.console_errors if "jupyter-pipeline" in e]

    # Dark theme: the sidebar's text keeps its contrast (theme variables only).
    _set_theme(lab, "JupyterLab Dark")
    try:
        open_notebook(lab, page, nb)
        panel = open_pipeline_panel(page)
        expect(page.locator("body")).to_have_attribute("data-jp-theme-name", "JupyterLab Dark")
        expect(panel.locator(".jp-PipelineGraph-node")).to_have_count(5)
        for selector in (
            ".jp-PipelineGraph-node text",
            ".jp-PipelineStep-name",
            ".jp-PipelineBadge",
        ):
            assert page.evaluate(CONTRAST, selector) > 4.5, selector
        screenshot(page, "sidebar-iris-dark")
    finally:
        _set_theme(lab, "JupyterLab Light")


# WCAG contrast ratio between an element's text colour (SVG fill or CSS colour) and the
# sidebar's background.
CONTRAST = """(selector) => {
  const el = document.querySelector(selector);
  const style = getComputedStyle(el);
  const fg = el instanceof SVGElement ? style.fill : style.color;
  const bg = getComputedStyle(document.querySelector('.jp-PipelinePanel')).backgroundColor;
  const lum = c => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(v => {
      v = Number(v) / 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


def _set_theme(lab: Lab, name: str) -> None:
    """Choose the lab's theme through the settings REST API (applies on the next page load)."""
    lab.api(
        "lab/api/settings/@jupyterlab/apputils-extension:themes",
        "PUT",
        {"raw": json.dumps({"theme": name})},
    )


def test_undefined_name_diagnostic_selects_its_cell(lab: Lab, page) -> None:
    nb = write_notebook(
        lab,
        "undefined.ipynb",
        [
            ("code", "import math\nx = 2", ["step:first"]),
            ("code", "y = x * 2", ["step:second"]),
            ("code", "print(y)\nz = math.sqrt(y)", []),
            ("code", "total = z + missing_value", ["step:third"]),
        ],
    )
    open_notebook(lab, page, nb)
    panel = open_pipeline_panel(page)
    diag = panel.locator('.jp-PipelineDiagnostic[data-code="undefined-name"]')
    expect(diag).to_have_count(1)
    expect(diag).to_contain_text("missing_value")
    # Numbered as the CLI numbers it (the cell's index in the .ipynb): one number everywhere.
    expect(diag).to_contain_text("cell 3")
    # The same diagnostic is marked on the cell itself.
    cells = page.locator(".jp-Notebook .jp-Cell")
    expect(cells.nth(3).locator(".jp-PipelineCellDiagnostic")).to_contain_text("undefined-name")
    # Select another cell first, so the click visibly moves the selection.
    cells.nth(0).locator(".jp-InputPrompt").click()
    expect(cells.nth(0)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    diag.locator("button").click()
    expect(cells.nth(3)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    expect(cells.nth(0)).not_to_have_class(re.compile(r"\bjp-mod-active\b"))
    screenshot(page, "diagnostic-undefined-name")


def test_untagged_notebook_hint_and_split_menu(lab: Lab, page) -> None:
    nb = write_notebook(
        lab,
        "untagged.ipynb",
        [
            ("markdown", "# Report", []),
            ("markdown", "## Load", []),
            ("code", "data = list(range(10))", []),
            ("markdown", "## Sum", []),
            ("code", "total = sum(data)\nprint(total)", []),
        ],
    )
    open_notebook(lab, page, nb)
    panel = open_pipeline_panel(page)
    expect(panel.locator(".jp-PipelineHint")).to_contain_text("no step tags")
    expect(panel.locator(".jp-PipelineStep")).to_have_count(1)
    panel.locator(".jp-PipelineSplit select").select_option("headings")
    expect(panel.locator(".jp-PipelineStep")).to_have_count(2)
    edge = panel.locator(".jp-PipelineGraph-edge")
    expect(edge.locator(".jp-PipelineGraph-edgeLabel text")).to_have_text("data")
    # Splitting from the menu writes nothing into the notebook.
    assert "tags" not in lab.api("api/contents/untagged.ipynb")["content"]["cells"][2]["metadata"]


def test_missing_server_extension_says_what_to_install(tmp_path, page) -> None:
    # A real lab with the lab extension but without the server extension (as after installing
    # only the frontend, or with an old server): the panel says what to install.
    config = tmp_path / "no_server_extension.json"
    config.write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_pipeline.server": False}}})
    )
    with start_lab(tmp_path, [f"--config={config}"]) as bare:
        nb = copy_example(bare, "iris_classifier.ipynb")
        open_notebook(bare, page, nb)
        panel = open_pipeline_panel(page)
        expect(panel.locator(".jp-PipelineError")).to_contain_text(
            "server extension missing or outdated: pip install"
        )
        screenshot(page, "server-extension-missing")
