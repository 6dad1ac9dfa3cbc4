"""Device check: GPU steps get their own device on a machine that has GPUs.

Not a speed benchmark: run it on a machine with NVIDIA GPUs (the device tool's H200 did).
It prints the devices found, then runs a notebook whose two training steps each ask for one
GPU (``limit:nvidia.com/gpu:1``) with room for both to run at once, and reports what each
step's kernel saw: ``CUDA_VISIBLE_DEVICES`` and the device count from the CUDA driver
(``cuInit``/``cuDeviceGetCount`` through ctypes, no framework needed). With one GPU the two
steps must run one after the other; with two or more, on different devices. Then the same
steps asking for more GPUs than there are, with ``allow_cpu``: the driver must see none.

Usage::

    python bench/gpus.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import _cell, _write

_PROBE = """import ctypes, os
try:
    cuda = ctypes.CDLL("libcuda.so.1")
    rc = cuda.cuInit(0)
    n = ctypes.c_int(0)
    if rc == 0:
        cuda.cuDeviceGetCount(ctypes.byref(n))
except OSError as exc:
    rc, n = f"no driver ({exc})", ctypes.c_int(0)
print("visible:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")), "cuInit:", rc, "devices:", n.value)
"""


def notebook(path: Path, count: int) -> Path:
    tag = f"limit:nvidia.com/gpu:{count}"
    return _write(
        path,
        [
            _cell("import time", "imports"),
            _cell("a = 1", "step:prep"),
            _cell(f"time.sleep(1)\nx = a + 1\n{_PROBE}", "step:train-x", tag),
            _cell(f"time.sleep(1)\ny = a + 2\n{_PROBE}", "step:train-y", tag),
        ],
    )


def main() -> int:
    from jupyter_pipeline.analysis import analyze_notebook
    from jupyter_pipeline.runners.gpus import GpuUnavailable, detect_gpus
    from jupyter_pipeline.runners.local import LocalRunner
    from jupyter_pipeline.store import RunStore

    devices, found = detect_gpus()
    print(f"devices: {devices} ({found})")
    tmp = Path(tempfile.mkdtemp(prefix="jp-gpus-"))
    store = RunStore(tmp / "runs.sqlite")
    ok = True
    cases = [(1, False), (len(devices) + 1, True)]
    for count, allow_cpu in cases:
        nb = notebook(tmp / f"gpu{count}.ipynb", count)
        runner = LocalRunner(store, max_parallel=4, cache=False, allow_cpu=allow_cpu)
        try:
            run = runner.run(analyze_notebook(nb), nb)
        except GpuUnavailable as exc:
            print(f"refused up front: {exc}")
            ok = ok and not devices
            continue
        steps = {s.step: s for s in run.steps}
        x, y = steps["train-x"], steps["train-y"]
        overlap = x.started < y.finished and y.started < x.finished
        print(
            f"\n{count} GPU(s) a step, allow_cpu={allow_cpu}: run {run.state.value}, "
            f"the two GPU steps {'overlapped' if overlap else 'ran one after the other'}"
        )
        for s in (x, y):
            log = Path(s.log_path).read_text() if s.log_path else ""
            seen = [line for line in log.splitlines() if line.startswith("visible:")]
            print(f"  {s.step}: {seen[0] if seen else '(nothing printed)'}")
        if not allow_cpu:
            ok = ok and run.state.value == "succeeded" and (len(devices) > 1 or not overlap)
    print("\nok" if ok else "\nFAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
