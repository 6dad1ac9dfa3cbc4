"""Tag edit -> Pipeline sidebar graph updated, in a real JupyterLab with Chromium.

A generated 200-cell notebook (20 steps of 10 cells, each step reading the previous step's
value) is opened in a real ``jupyter lab`` (tests/ui/labui.py) with the installed extension.
Each round renames one step through its badge's role editor; the time is measured in the page,
from the click on "Apply" to the graph showing the renamed step (rAF polling, so it includes
the tag write, the ``POST analyze`` of the live notebook, the elkjs layout and the SVG render).

Baseline, same process: ``POST analyze`` of the same edit over HTTP from Python (the share of
the time that is the server's analysis). Goal: edit -> graph < 300 ms (median).

The rounds start once JupyterLab has rendered every cell of the notebook: right after opening,
it renders the off-screen cells in the background (a CodeMirror editor each, tens of ms a cell
on a loaded machine), and that work, not the edit's, would be measured otherwise.

The new names keep the steps' box widths (the layout then comes from the graph's cache by
shape, as for most renames); ``--long-names`` makes every new name longer than any before, so
every round lays the graph out with elkjs.

    .venv/bin/python bench/ui_tagging.py [--rounds 15] [--long-names]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ui"))

from labui import (
    CHROMIUM_ARGS,
    Lab,
    chromium_path,
    open_notebook,
    open_pipeline_panel,
    start_lab,
    write_notebook,
)

STEPS = 20
CELLS_PER_STEP = 10

# Returns the time to the graph showing `step`, and the extension's user-timing marks
# (labextension/src/model/marks.ts) of this round, in ms after the click.
WAIT_FOR_STEP = """async (step) => {
  const t0 = performance.now();
  document.querySelector('.jp-Dialog .jp-mod-accept').click();
  await new Promise(resolve => {
    const check = () =>
      document.querySelector(`.jp-PipelineGraph-node[data-step="${step}"]`)
        ? resolve()
        : requestAnimationFrame(check);
    check();
  });
  const total = performance.now() - t0;
  const marks = {};
  for (const m of performance.getEntriesByType('mark')) {
    if (m.name.startsWith('jupyter-pipeline:') && m.startTime >= t0) {
      marks[m.name.slice('jupyter-pipeline:'.length)] = m.startTime - t0;
    }
  }
  // The analyze request of this round as the browser's Resource Timing saw it, with the
  // server's own Server-Timing entries (parse, queue, work, encode).
  const req = performance.getEntriesByType('resource').filter(
    e => e.name.includes('/jupyter-pipeline/analyze') && e.startTime >= t0
  ).pop();
  if (req) {
    marks['request:fetch-start'] = req.startTime - t0;
    marks['request:response-start'] = req.responseStart - t0;
    marks['request:response-end'] = req.responseEnd - t0;
    for (const st of req.serverTiming) {
      marks[`server:${st.name}(dur)`] = st.duration;
    }
  }
  return {total, marks};
}"""


# True once every cell has rendered its input (JupyterLab renders off-screen cells lazily).
ALL_RENDERED = """(n) =>
  document.querySelectorAll('.jp-Notebook .jp-Cell > .jp-Cell-inputWrapper').length >= n"""


def cells() -> list[tuple[str, str, list[str]]]:
    out: list[tuple[str, str, list[str]]] = []
    for s in range(STEPS):
        for c in range(CELLS_PER_STEP):
            src = f"v{s}_{c} = {'v' + str(s - 1) + '_9' if s and not c else s * 10 + c} + 1"
            out.append(("code", src, [f"step:s{s}"] if c == 0 else []))
    return out


def post_analyze(lab: Lab, body: object) -> dict[str, float]:
    """``POST analyze`` from Python; the answer's Server-Timing entries (name -> ms)."""
    req = urllib.request.Request(
        f"{lab.url}jupyter-pipeline/analyze",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        json.loads(resp.read())
        header = resp.headers.get("Server-Timing", "")
    out: dict[str, float] = {}
    for m in re.finditer(r"([\w-]+);dur=([\d.]+)", header):
        out[m.group(1)] = float(m.group(2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument(
        "--long-names",
        action="store_true",
        help="rename to ever longer names: every round needs a new elkjs layout",
    )
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, start_lab(Path(tmp)) as lab:
        nb = write_notebook(lab, "bench200.ipynb", cells())
        content = lab.api(f"api/contents/{nb}")["content"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(60_000)
            warnings: list[str] = []
            page.on(
                "console",
                lambda m: warnings.append(m.text) if "jupyter-pipeline" in m.text else None,
            )
            open_notebook(lab, page, nb)
            panel = open_pipeline_panel(page)
            panel.locator(".jp-PipelineGraph-node").nth(STEPS - 1).wait_for()
            page.wait_for_function(ALL_RENDERED, arg=STEPS * CELLS_PER_STEP, timeout=180_000)
            ui: list[float] = []
            api: list[float] = []
            in_page: list[float] = []
            marks: dict[str, list[float]] = {}
            api_server: dict[str, list[float]] = {}
            layouts: list[str] = []
            for r in range(args.rounds):
                s = (r * 7) % STEPS
                cell = page.locator(".jp-Notebook .jp-Cell").nth(s * CELLS_PER_STEP)
                cell.scroll_into_view_if_needed()
                cell.locator(".jp-PipelineBadge").click()
                new = f"r{r}-s{s}" + ("-" + "x" * (4 * r + 12) if args.long_names else "")
                page.locator(".jp-Dialog").get_by_label("Step name").fill(new)
                got = page.evaluate(WAIT_FOR_STEP, new)
                ui.append(got["total"])
                for name, at in got["marks"].items():
                    marks.setdefault(name, []).append(at)
                layouts.append("elkjs" if "layout:start" in got["marks"] else "cached")
                page.locator(".jp-Dialog").wait_for(state="detached")
                # The sidebar's status line gives the analyze request's own time, in the page.
                status = panel.locator(".jp-PipelineStatus").text_content() or ""
                m = re.search(r"(\d+) ms", status)
                if m:
                    in_page.append(float(m.group(1)))
                # Baseline: the server's analysis of the same edit over HTTP (new content each
                # round, as the server memoizes analyses by content).
                content["cells"][s * CELLS_PER_STEP]["metadata"]["tags"] = [f"step:b{r}-s{s}"]
                t0 = time.perf_counter()
                timing = post_analyze(lab, {"notebook": content, "path": nb})
                api.append((time.perf_counter() - t0) * 1000)
                for name, dur in timing.items():
                    api_server.setdefault(name, []).append(dur)
            browser.close()
    med_ui, med_api = statistics.median(ui), statistics.median(api)
    p95_ui = sorted(ui)[max(0, int(len(ui) * 0.95) - 1)]
    print(
        json.dumps(
            {
                "cells": STEPS * CELLS_PER_STEP,
                "steps": STEPS,
                "rounds": args.rounds,
                "long_names": args.long_names,
                "layouts": {k: layouts.count(k) for k in ("elkjs", "cached")},
                "edit_to_graph_ms_median": round(med_ui, 1),
                "edit_to_graph_ms_p95": round(p95_ui, 1),
                "post_analyze_ms_median": round(med_api, 1),
                "analyze_request_in_page_ms_median": round(statistics.median(in_page), 1)
                if in_page
                else None,
                "load_average_1min": round(os.getloadavg()[0], 1),
                # Median ms after the click at which each mark was last set (`server:*(dur)`:
                # durations). Medians over the rounds that set the mark: layout:start/end are
                # the elkjs rounds' only, layout:cached the others'.
                "marks_ms_median": {
                    k: round(statistics.median(v), 1)
                    for k, v in sorted(marks.items(), key=lambda kv: statistics.median(kv[1]))
                },
                "baseline_server_timing_ms_median": {
                    k: round(statistics.median(v), 1) for k, v in api_server.items()
                },
                "ratio_edit_to_graph_vs_analyze": round(med_ui / med_api, 2),
                "console": warnings,
                "goal_ms": 300,
                "met": med_ui < 300,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
