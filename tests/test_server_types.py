"""The lab extension's TypeScript API types are generated from the pydantic models
(scripts/gen_ts_types.py); this fails when the committed file is stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_ts_types", ROOT / "scripts" / "gen_ts_types.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_types_match_the_models():
    gen = _generator()
    assert gen.TARGET.read_text() == gen.render(), (
        "labextension/src/api/types.ts is stale: run .venv/bin/python scripts/gen_ts_types.py"
    )


def test_emitter_covers_what_the_models_use():
    gen = _generator()
    text = gen.render()
    # Every wire model is there, with nullable, optional, literal, map and array fields.
    assert "export interface RunInfo {" in text
    assert "  error_cell: number | null;" in text
    assert "  outputs: Record<string, OutputInfo>;" in text
    assert "  rerun?: string | null;" in text  # a request field with a default is optional
    assert 'export type RunState = "queued" | "running" | "succeeded"' in text
    assert '  action: "cached" | "will run";' in text
    assert "  plan: PlanItem[];" in text
    assert (
        gen.ts_type({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "null"}]}})
        == "(string | null)[]"
    )
    assert gen.ts_type({}) == "unknown"
