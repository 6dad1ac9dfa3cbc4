"""Run view speed in a real JupyterLab + Chromium: step finishing → sidebar showing it; a list
of 200 runs and a 10,000-line log.

    python bench/ui_runs.py

1. Latency. A 4-step chain (each step sleeps 0.4 s) is started with the sidebar's Run button.
   In the page, a MutationObserver notes when each step's row turns "succeeded"; a second
   EventSource on the same event stream notes when the server's event for it arrives (the
   baseline: what the sidebar adds on top of the stream). Both are compared with the step's
   `finished` time in the run store (same machine, same clock). Goal: sidebar < 0.5 s.
2. Rendering. 200 finished runs of one notebook are written to the store, one with a step whose
   log has 10,000 lines. Timed in the page: the list of 200 (toggle "All notebooks" off/on
   until the rows are drawn), opening the big run's log until its last line is on screen,
   against the same for a 10-line log (baseline, ratio printed).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

from labui import CHROMIUM_ARGS, chromium_path, open_notebook, start_lab, write_notebook  # noqa: E402

from jupyter_pipeline.analysis import analyze_notebook  # noqa: E402
from jupyter_pipeline.model import RunState  # noqa: E402
from jupyter_pipeline.store import RunStore  # noqa: E402

OBSERVE = """() => {
  window.__seen = {};
  window.__events = {};
  const es = new EventSource('/jupyter-pipeline/events');
  es.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.kind === 'step' && m.state === 'succeeded' && !window.__events[m.step]) {
      window.__events[m.step] = Date.now() / 1000;
    }
  };
  new MutationObserver(() => {
    for (const row of document.querySelectorAll('.jp-PipelineRunSteps tr[data-step]')) {
      const s = row.getAttribute('data-step');
      if (row.getAttribute('data-state') === 'succeeded' && !window.__seen[s]) {
        window.__seen[s] = Date.now() / 1000;
      }
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             attributeFilter: ['data-state']});
}"""


def _press_run(page) -> str:
    section = page.locator(".jp-PipelineRunSection")
    section.scroll_into_view_if_needed()
    button = section.locator(".jp-PipelineRunButton")
    deadline = time.monotonic() + 120
    while not button.is_enabled():
        if time.monotonic() > deadline:
            raise SystemExit("Run never became enabled")
        time.sleep(0.1)
    button.click()
    page.locator(".jp-PipelineRunView, .jp-Dialog").first.wait_for(timeout=60_000)
    if page.locator(".jp-Dialog").count():
        page.get_by_role("button", name="Save and Run").click()
    view = section.locator(".jp-PipelineRunView")
    view.wait_for(timeout=60_000)
    return view.get_attribute("data-run") or ""


def latency(lab, page) -> None:
    steps = ["s1", "s2", "s3", "s4"]
    cells = [("code", "import time", ["imports"]), ("code", "x0 = 0", ["step:s0"])]
    for i, s in enumerate(steps, 1):
        cells.append(("code", f"time.sleep(0.4)\nx{i} = x{i - 1} + 1", [f"step:{s}"]))
    nb = write_notebook(lab, "latency.ipynb", cells)
    open_notebook(lab, page, nb)
    page.get_by_role("tab", name="Pipeline").click()
    page.evaluate(OBSERVE)
    run_id = _press_run(page)
    view = page.locator(f'.jp-PipelineRunView[data-run="{run_id}"]')
    view.locator('.jp-PipelineRunView-header [data-state="succeeded"]').wait_for(timeout=300_000)
    time.sleep(0.5)
    seen = page.evaluate("window.__seen")
    events = page.evaluate("window.__events")
    store = RunStore(lab.root.parent / "store")
    run = store.get_run(run_id)
    store.close()
    ui, ev = [], []
    for s in run.steps:
        if s.step in steps and s.finished and s.step in seen and s.step in events:
            ui.append(seen[s.step] - s.finished)
            ev.append(events[s.step] - s.finished)
    print("\n1. step finished (store) -> shown, seconds, per step:", len(ui), "steps")
    print(f"   event stream (baseline): median {statistics.median(ev):.3f}  max {max(ev):.3f}")
    print(f"   sidebar row 'succeeded': median {statistics.median(ui):.3f}  max {max(ui):.3f}")
    print(f"   sidebar / stream: {statistics.median(ui) / max(statistics.median(ev), 1e-3):.2f}x")
    print(f"   goal < 0.5 s: {'met' if max(ui) < 0.5 else 'NOT met'}")


def _fake_runs(lab, nb: str, n: int, big_lines: int) -> tuple[str, str]:
    """Finished runs of ``nb`` in the lab's store; returns (big-log run id, small-log run id)."""
    store = RunStore(lab.root.parent / "store")
    pipeline = analyze_notebook(lab.root / nb)
    logs = lab.root.parent / "fake-logs"
    logs.mkdir(exist_ok=True)
    ids = []
    now = time.time() - n * 60
    for i in range(n):
        run = store.create_run(
            pipeline, notebook=lab.root / nb, parameters={"n": i}, state=RunState.succeeded
        )
        store.update_run(
            run.id, created=now + i * 60, started=now + i * 60, finished=now + i * 60 + 3
        )
        for s in pipeline.steps:
            log = logs / f"{run.id}-{s.name}.log"
            lines = big_lines if i == n - 1 else (10 if i == n - 2 else 3)
            log.write_text("".join(f"line {k} of the step's output\n" for k in range(lines)))
            store.update_step(
                run.id,
                s.name,
                state=RunState.succeeded,
                started=now + i * 60,
                finished=now + i * 60 + 2,
                attempts=1,
                log_path=str(log),
            )
        ids.append(run.id)
    store.close()
    return ids[-1], ids[-2]


def rendering(lab, page) -> None:
    nb = write_notebook(
        lab,
        "many.ipynb",
        [("code", "n = 1", ["pipeline-parameters"]), ("code", "y = n", ["step:only"])],
    )
    big, small = _fake_runs(lab, nb, 200, 10_000)
    open_notebook(lab, page, nb)
    page.get_by_role("tab", name="Pipeline").click()
    section = page.locator(".jp-PipelineRunSection")
    section.scroll_into_view_if_needed()
    rows = section.locator(".jp-PipelineRunList li")
    rows.first.wait_for(timeout=60_000)
    times = []
    for _ in range(5):
        t = page.evaluate(
            """async () => {
              const box = document.querySelector('.jp-PipelineRuns-toolbar input');
              const t0 = performance.now();
              box.click(); await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
              box.click(); await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
              return performance.now() - t0;
            }"""
        )
        times.append(t / 2)
    print(
        f"\n2. 200 runs: {rows.count()} rows drawn (then 'Show older runs'); "
        f"list re-render median {statistics.median(times):.1f} ms"
    )

    def open_log(run_id: str, last: str) -> float:
        section.locator(f'.jp-PipelineRunList li[data-run="{run_id}"] button').click()
        view = section.locator(f'.jp-PipelineRunView[data-run="{run_id}"]')
        view.wait_for()
        t0 = page.evaluate("performance.now()")
        page.wait_for_function(
            f"""() => {{
              const pre = document.querySelector('.jp-PipelineLog-text');
              return pre && pre.textContent.includes({last!r});
            }}""",
            polling="raf",
            timeout=60_000,
        )
        t1 = page.evaluate("performance.now()")
        section.locator(".jp-PipelineRunView-back").click()
        return t1 - t0

    small_ms = statistics.median(open_log(small, "line 9 of") for _ in range(3))
    big_ms = statistics.median(open_log(big, "line 9999 of") for _ in range(3))
    print(f"   log of 10 lines shown in {small_ms:.0f} ms (baseline)")
    print(f"   log of 10,000 lines shown in {big_ms:.0f} ms ({big_ms / max(small_ms, 1):.1f}x)")
    # Responsiveness with the big log on screen: a click on another step row to the next frame.
    section.locator(f'.jp-PipelineRunList li[data-run="{big}"] button').click()
    page.wait_for_function(
        "() => (document.querySelector('.jp-PipelineLog-text') || {})"
        ".textContent?.includes('line 9999')"
    )
    frame = page.evaluate(
        """async () => { const t0 = performance.now();
          await new Promise(r => requestAnimationFrame(() => r()));
          return performance.now() - t0; }"""
    )
    print(f"   next frame with the 10,000-line log on screen: {frame:.1f} ms")


def main() -> None:
    if chromium_path() is None:
        raise SystemExit("needs Chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, start_lab(Path(tmp)) as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(60_000)
        page = context.new_page()
        latency(lab, page)
        rendering(lab, page)
        browser.close()


if __name__ == "__main__":
    main()
