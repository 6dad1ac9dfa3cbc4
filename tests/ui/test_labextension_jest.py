"""The lab extension's Jest tests (tag model, colours, layout, run model), run from pytest so that
the README's one test command runs everything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parents[2] / "labextension"


def test_jest_suite_passes() -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("node/npm not found: the lab extension's unit tests need node 20 (npx jest)")
    if not (LABEXTENSION / "node_modules" / ".bin" / "jest").exists():
        pytest.fail("labextension/node_modules missing: run ./scripts/setup.sh (npm install)")
    proc = subprocess.run(
        [npx, "jest", "--ci", "--silent"],
        cwd=LABEXTENSION,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = [line for line in proc.stderr.splitlines() if line.startswith("Tests:")]
    assert summary and "passed" in summary[0] and "failed" not in summary[0], proc.stderr[-2000:]
