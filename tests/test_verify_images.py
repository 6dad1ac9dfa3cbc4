"""One image fingerprint for `jupyter-pipeline verify` and bench/fidelity.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from jupyter_pipeline.runners.verify import image_fingerprints, text_outputs

ROOT = Path(__file__).resolve().parent.parent


def _fidelity():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_fidelity", ROOT / "bench" / "fidelity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


CELL = {
    "outputs": [
        {
            "output_type": "display_data",
            "data": {"text/plain": "<Figure>", "image/png": ["iVBOR", "w0KGgo="]},
        },
        {"output_type": "display_data", "data": {"image/jpeg": "/9j/4AAQ"}},
        {"output_type": "display_data", "data": {"image/svg+xml": "<svg/>"}},
    ]
}


def test_verify_and_fidelity_fingerprint_images_alike():
    prints = [fp for o in CELL["outputs"] for fp in image_fingerprints(o["data"])]
    assert [p.split()[0] for p in prints] == ["[image/png]", "[image/jpeg]", "[image/svg+xml]"]
    # A list-of-lines payload and the same payload as one string are the same image.
    assert image_fingerprints({"image/png": "iVBORw0KGgo="}) == prints[:1]
    assert image_fingerprints({"image/png": "iVBORw0KGgp="}) != prints[:1]
    verify_lines = [t for t in text_outputs(CELL, images=True) if t.startswith("[image/")]
    assert verify_lines == prints
    assert _fidelity().cell_outputs(CELL)["images"] == prints
