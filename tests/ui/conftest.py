"""Browser tests of the lab extension: a real ``jupyter lab`` and Debian's Chromium.

Session fixtures start one JupyterLab server (free port, token, a temporary root folder and an
app-settings folder that turns off the news toast) and one headless Chromium driven by Python
Playwright; each test gets a fresh browser context. The extension under test is the one
installed in this environment by ``pip install .`` / ``./scripts/setup.sh`` (built assets in
``share/jupyter/labextensions``), exactly what a user gets.

Screenshots go to ``tests/ui/screenshots/`` (git-ignored); the README's come from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from labui import CHROMIUM_ARGS, TIMEOUT_MS, Lab, chromium_path, start_lab
from playwright.sync_api import expect

# Assertions wait as long as actions: on a loaded 2-core machine an analysis answer can take
# seconds (Playwright's default for expect is 5 s).
expect.set_options(timeout=TIMEOUT_MS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/ui/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One ``jupyter lab`` with the installed lab and server extensions, for the session."""
    with start_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Debian Chromium through Python Playwright (never ``playwright install``)."""
    executable = chromium_path()
    if executable is None:
        message = "no Chromium: apt-get install -y chromium (the UI tests drive a real browser)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser is a broken set-up, not a skip
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: object, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh browser context and page (1400x900); console errors are collected on it."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.console_errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(autouse=True)
def jp_asyncio_loop() -> Iterator[None]:
    """Override pytest-jupyter's autouse loop fixture for the browser tests.

    It closes the thread's current event loop after each test, which here is Playwright's (still
    running: the sync API drives it), so teardown fails. These tests run the server in its own
    process and need no loop.
    """
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    """Override pytest-jupyter's autouse in-process server clean-up: there is none here."""
    yield None
