"""Shared pytest configuration.

``--update-golden`` regenerates golden files (analysis JSON, compiled YAML) instead of
comparing against them; review the diff and commit it.
"""

from __future__ import annotations

import os

import pytest

# jp_fetch / jp_serverapp for the server extension's tests (tests/test_server_*.py).
pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Steps run in fresh kernels: keep matplotlib headless and deterministic everywhere.
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden files."""
    return bool(request.config.getoption("--update-golden"))
