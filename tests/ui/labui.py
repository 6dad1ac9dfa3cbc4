"""Helpers of the browser tests: start a real ``jupyter lab``, open notebooks, take screenshots.

Imported by ``conftest.py`` (fixtures) and the tests (``from labui import ...``; pytest puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).parent / "screenshots"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "notebooks"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Lab start-up and first render are slow on a loaded 2-core machine; waits use this.
TIMEOUT_MS = 30_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    """A running JupyterLab server."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, method: str = "GET", body: object | None = None) -> object:
        """Call the server's REST API (JSON in, JSON out) with the token."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def open_url(self, notebook: str) -> str:
        """The URL that opens ``notebook`` (relative to the root) in the lab, with the token."""
        return f"{self.url}lab/tree/{notebook}?token={self.token}&reset"


@contextmanager
def start_lab(base: Path, extra_args: Sequence[str] = ()) -> Iterator[Lab]:
    """Run ``jupyter lab`` (this environment's, with the installed extensions) in ``base``."""
    root = base / "root"
    root.mkdir()
    settings = base / "app-settings"
    settings.mkdir()
    # Without this a "Jupyter news?" toast covers the bottom right of every screenshot.
    (settings / "overrides.json").write_text(
        json.dumps(
            {
                "@jupyterlab/apputils-extension:notification": {
                    "checkForUpdates": False,
                    "fetchNews": "false",
                }
            }
        )
    )
    port = _free_port()
    token = uuid.uuid4().hex
    log = base / "lab.log"
    env = dict(os.environ)
    env["JUPYTER_PIPELINE_STORE"] = str(base / "store")
    env.setdefault("JUPYTER_CONFIG_DIR", str(base / "config"))
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.app_settings_dir={settings}",
        *extra_args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(
                f"{url}api/status", headers={"Authorization": f"token {token}"}
            )
            with urllib.request.urlopen(req, timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"jupyter lab did not answer in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
    try:
        yield Lab(url=url, token=token, root=root, process=proc, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def screenshot(page: object, name: str) -> Path:
    """Save a full-window screenshot as ``tests/ui/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))  # type: ignore[attr-defined]
    return path


def copy_example(lab: Lab, name: str, as_name: str | None = None) -> str:
    """Copy ``examples/notebooks/<name>`` into the lab's root; returns its relative path."""
    target = as_name or f"{uuid.uuid4().hex[:6]}-{name}"
    shutil.copy(EXAMPLES / name, lab.root / target)
    return target


def write_notebook(
    lab: Lab,
    name: str,
    cells: list[tuple[str, str, list[str]]],
    metadata: dict[str, object] | None = None,
) -> str:
    """Write a notebook of ``(cell_type, source, tags)`` cells into the lab's root.

    ``metadata`` replaces the notebook metadata (default: a ``python3`` kernelspec only).
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    if metadata is not None:
        nb.metadata = nbformat.from_dict(metadata)
    for kind, source, tags in cells:
        new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
        cell = new(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, lab.root / name)
    return name


def open_notebook(lab: Lab, page: object, notebook: str) -> None:
    """Open ``notebook`` in the lab and wait until its cells are rendered."""
    page.goto(lab.open_url(notebook))  # type: ignore[attr-defined]
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()  # type: ignore[attr-defined]


def open_pipeline_panel(page: object) -> object:
    """Click the "Pipeline" tab in the right sidebar; returns the panel's locator."""
    page.get_by_role("tab", name="Pipeline").click()  # type: ignore[attr-defined]
    panel = page.locator(".jp-PipelinePanel")  # type: ignore[attr-defined]
    panel.wait_for()
    return panel


# -- the Run section of the Pipeline sidebar --------------------------------------------------


def run_section(page: object) -> object:
    """The sidebar's Run section, scrolled into view."""
    section = page.locator(".jp-PipelineRunSection")  # type: ignore[attr-defined]
    section.scroll_into_view_if_needed()
    return section


def press_run(page: object, target: str | None = None) -> tuple[object, object, str]:
    """Press Run (on ``target`` if given) and wait for the new run's view.

    The notebook is unedited, so Run must start at once: JupyterLab's own metadata refresh
    when the kernel starts (language_info) is no reason to ask to save. A save dialog fails
    the test. Returns the section, the run view and the run's id.
    """
    from playwright.sync_api import expect

    section = run_section(page)
    if target is not None:
        section.locator(".jp-PipelineRunTarget select").select_option(target)  # type: ignore[attr-defined]
    button = section.locator(".jp-PipelineRunButton")  # type: ignore[attr-defined]
    expect(button).to_be_enabled(timeout=60_000)  # the analysis must have answered
    button.click()
    view = section.locator(".jp-PipelineRunView")  # type: ignore[attr-defined]
    page.locator(".jp-PipelineRunView, .jp-Dialog").first.wait_for(timeout=60_000)  # type: ignore[attr-defined]
    expect(page.locator(".jp-Dialog")).to_have_count(0)  # type: ignore[attr-defined]
    expect(view).to_be_visible(timeout=60_000)
    return section, view, view.get_attribute("data-run")  # type: ignore[attr-defined]


def step_row(view: object, step: str) -> object:
    """The run view's table row of ``step``."""
    return view.locator(f'.jp-PipelineRunSteps tr[data-step="{step}"]')  # type: ignore[attr-defined]


def shot_run(page: object, view: object, name: str) -> Path:
    """Screenshot with ``view`` at the top of the sidebar (it sits below the analysis)."""
    view.evaluate("e => e.scrollIntoView({block: 'start'})")  # type: ignore[attr-defined]
    return screenshot(page, name)


def widen_right_sidebar(page: object, by: int) -> None:
    """Drag the handle between the main area and the right sidebar ``by`` pixels to the left."""
    handles = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:not(.lm-mod-hidden)")  # type: ignore[attr-defined]
    box = handles.last.bounding_box()
    assert box, "no visible handle beside the right sidebar"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(x - by, y, steps=5)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]


def text_lines(element: object) -> int:
    """How many lines the text of ``element`` (a locator) is laid out on."""
    return int(
        element.evaluate(  # type: ignore[attr-defined]
            """e => { const r = document.createRange(); r.selectNodeContents(e);
                      return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size; }"""
        )
    )
