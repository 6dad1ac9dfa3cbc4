"""Tagging cells through the badge editor, in a real JupyterLab: saved tags, renames, undo."""

from __future__ import annotations

import json
import re
import time

from labui import Lab, open_notebook, open_pipeline_panel, screenshot, write_notebook
from playwright.sync_api import Page, expect


def _badge(page: Page, index: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-PipelineBadge")


def _make_step(page: Page, index: int, name: str, prev: list[str] = (), shot: str = "") -> None:
    """Open cell ``index``'s role editor from its badge, make it step ``name``, apply."""
    _badge(page, index).click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_role("radio", name="Step", exact=True).check()
    dialog.get_by_label("Step name").fill(name)
    for p in prev:
        dialog.get_by_role("checkbox", name=p).check()
    if shot:
        screenshot(page, shot)
    dialog.get_by_role("button", name="Apply").click()
    expect(dialog).to_have_count(0)


def _save_and_read_tags(lab: Lab, page: Page, name: str) -> list[list[str]]:
    # The role editor must be gone first: while it closes it still takes the keys.
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    # The notebook's own toolbar button: a key press goes wherever the focus happens to be.
    save = page.locator('.jp-NotebookPanel:visible [data-command="docmanager:save"]')
    dirty = page.locator(".jp-mod-current.jp-mod-dirty")
    for _attempt in range(3):
        save.click()
        try:
            expect(dirty).to_have_count(0, timeout=15_000)
            break
        except AssertionError:
            # JupyterLab writes the kernel's language info into the notebook's metadata when
            # the kernel first reports it; landing after the save, that makes it dirty again.
            continue
    else:
        raise AssertionError("the notebook stayed unsaved after three saves")
    content = lab.api(f"api/contents/{name}")["content"]
    return [c["metadata"].get("tags", []) for c in content["cells"]]


def test_tag_two_cells_into_two_steps_through_the_badge_editor(lab: Lab, page: Page) -> None:
    nb = write_notebook(
        lab,
        "two-steps.ipynb",
        [
            ("code", "rows = [3, 1, 2]", []),
            ("code", "ordered = sorted(rows)\nprint(ordered)", ["hide-input"]),
        ],
    )
    open_notebook(lab, page, nb)
    panel = open_pipeline_panel(page)
    expect(panel.locator(".jp-PipelineStep")).to_have_count(1)  # untagged: one step

    _make_step(page, 0, "load_rows")
    expect(_badge(page, 0)).to_have_text(re.compile("load_rows"))
    _make_step(page, 1, "sort_rows", prev=["load_rows"], shot="role-editor")
    expect(page.locator(".jp-mod-current.jp-mod-dirty")).to_have_count(1)  # notebook is dirty

    # The sidebar follows the unsaved edit: two steps, the edge carrying `rows`.
    steps = panel.locator(".jp-PipelineStep")
    expect(steps).to_have_count(2)
    edge = panel.locator('.jp-PipelineGraph-edge[data-source="load-rows"][data-target="sort-rows"]')
    expect(edge.locator(".jp-PipelineGraph-edgeLabel text")).to_have_text("rows")

    tags = _save_and_read_tags(lab, page, nb)
    # Exactly the Kale-compatible tags the CLI reads; other tools' tags stay.
    assert tags == [["step:load_rows"], ["hide-input", "step:sort_rows", "prev:load_rows"]]
    screenshot(page, "tagged-two-steps")


def test_renaming_a_step_renames_every_prev(lab: Lab, page: Page) -> None:
    nb = write_notebook(
        lab,
        "rename.ipynb",
        [
            ("code", "x = 1", ["step:load"]),
            ("code", "y = x + 1", ["step:train", "prev:load"]),
            ("code", "z = y + x", ["step:report", "prev:load", "prev:train"]),
        ],
    )
    open_notebook(lab, page, nb)
    open_pipeline_panel(page)
    _badge(page, 0).click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_label("Step name").fill("ingest")
    dialog.get_by_role("button", name="Apply").click()
    tags = _save_and_read_tags(lab, page, nb)
    assert tags == [
        ["step:ingest"],
        ["step:train", "prev:ingest"],
        ["step:report", "prev:ingest", "prev:train"],
    ]


def test_undo_reverts_a_tag_edit(lab: Lab, page: Page) -> None:
    nb = write_notebook(
        lab,
        "undo.ipynb",
        [
            ("code", "a = 1", ["step:first"]),
            ("code", "b = a * 2", ["step:second"]),
        ],
    )
    open_notebook(lab, page, nb)
    panel = open_pipeline_panel(page)
    expect(panel.locator(".jp-PipelineStep")).to_have_count(2)
    _badge(page, 1).click()
    dialog = page.locator(".jp-Dialog")
    dialog.get_by_role("radio", name=re.compile("^Skip")).check()
    dialog.get_by_role("button", name="Apply").click()
    expect(_badge(page, 1)).to_have_attribute("data-kind", "skip")
    expect(panel.locator(".jp-PipelineStep")).to_have_count(1)

    # Undo in command mode (the editor left the edited cell active): the tag edit is reverted
    # in the model, the badge and the sidebar. Keys go wherever the focus is: the role editor
    # must be gone (while it closes it still takes them), and a click on the edited cell's
    # prompt gives the notebook the focus in command mode.
    expect(dialog).to_have_count(0)
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.nth(1).locator(".jp-InputPrompt").click()
    expect(cells.nth(1)).to_have_class(re.compile(r"\bjp-mod-active\b"))
    page.keyboard.press("Escape")
    page.keyboard.press("z")
    expect(_badge(page, 1)).to_have_attribute("data-kind", "step")
    expect(_badge(page, 1)).to_have_text(re.compile("second"))
    expect(panel.locator(".jp-PipelineStep")).to_have_count(2)
    screenshot(page, "undo-tag-edit")
    # Redo brings it back; undo again, and the saved file has the original tags.
    page.keyboard.press("Shift+z")
    expect(_badge(page, 1)).to_have_attribute("data-kind", "skip")
    page.keyboard.press("z")
    expect(_badge(page, 1)).to_have_attribute("data-kind", "step")
    assert _save_and_read_tags(lab, page, nb) == [["step:first"], ["step:second"]]


def test_tag_selected_cells_as_a_new_step_from_the_toolbar(lab: Lab, page: Page) -> None:
    nb = write_notebook(
        lab,
        "toolbar.ipynb",
        [
            ("code", "a = 1", ["step:first"]),
            ("code", "b = a + 1", []),
            ("code", "c = b + 1", []),
        ],
    )
    open_notebook(lab, page, nb)
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.nth(1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+ArrowDown")  # cells 2 and 3 selected
    expect(cells.nth(2)).to_have_class(re.compile(r"\bjp-mod-selected\b"))
    page.locator(
        '.jp-NotebookPanel-toolbar [data-jp-item-name="jupyter-pipeline-tag-step"]'
    ).click()
    page.locator(".jp-Dialog input").fill("later")
    page.get_by_role("button", name="Ok", exact=True).click()
    assert _save_and_read_tags(lab, page, nb) == [["step:first"], ["step:later"], []]


def _set_pipeline_settings(lab: Lab, values: dict) -> None:
    """The extension's settings through the settings REST API (read on the next page load)."""
    lab.api("lab/api/settings/jupyter-pipeline:plugin", "PUT", {"raw": json.dumps(values)})


def test_a_tag_edit_is_analyzed_at_once_typing_waits_for_the_delay(lab: Lab, page: Page) -> None:
    # A delay long enough that an analysis in the next seconds can only be an immediate one.
    _set_pipeline_settings(lab, {"analyzeDelay": 10_000})
    try:
        nb = write_notebook(
            lab,
            "at-once.ipynb",
            [
                ("code", "a = 1", ["step:first"]),
                ("code", "b = a * 2", ["step:second"]),
            ],
        )
        open_notebook(lab, page, nb)
        panel = open_pipeline_panel(page)
        steps = panel.locator(".jp-PipelineStep")
        expect(steps).to_have_count(2)
        sent: list[float] = []

        def on_request(request) -> None:
            if "/jupyter-pipeline/analyze" in request.url:
                sent.append(time.monotonic())

        page.on("request", on_request)

        def sent_since(t: float) -> int:
            return len([s for s in sent if s >= t])

        # The kernel's start writes its language_info into the notebook's metadata, an edit
        # that is analyzed too: let it pass (no request for 1.5 s) first.
        expect(page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).to_be_visible()
        for _ in range(20):
            quiet = time.monotonic()
            page.wait_for_timeout(1_500)
            if sent_since(quiet) == 0:
                break
        expect(panel.locator(".jp-PipelineView")).to_have_attribute("data-state", "ready")

        # A tag edit through the role editor: analyzed at once, with one request (the editor's
        # own refresh adds none to the document change's).
        _badge(page, 1).click()
        dialog = page.locator(".jp-Dialog")
        dialog.get_by_role("radio", name=re.compile("^Skip")).check()
        applied = time.monotonic()
        dialog.get_by_role("button", name="Apply").click()
        expect(steps).to_have_count(1, timeout=8_000)
        assert sent_since(applied) == 1

        # Undo is a tag edit the extension does not make itself: the document change alone
        # brings the analysis at once, not after the 10 s delay.
        page.keyboard.press("Escape")
        pressed = time.monotonic()
        page.keyboard.press("z")
        expect(_badge(page, 1)).to_have_attribute("data-kind", "step")
        expect(steps).to_have_count(2, timeout=8_000)
        assert sent_since(pressed) == 1

        # Typing in a source waits for the pause: no request while the delay runs.
        page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content").click()
        page.keyboard.press("End")
        typed = time.monotonic()
        page.keyboard.type(" + 1")
        page.wait_for_timeout(2_000)
        expect(page.locator(".jp-Notebook .jp-Cell").nth(1)).to_contain_text("b = a * 2 + 1")
        assert sent_since(typed) == 0
    finally:
        _set_pipeline_settings(lab, {})
