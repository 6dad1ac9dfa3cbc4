"""GPUs for local runs: which steps need one, which devices this machine has, who holds one.

A step tagged ``limit:nvidia.com/gpu:N`` (or ``limit:gpu:N``) gets N devices of its own,
passed to its kernel as ``CUDA_VISIBLE_DEVICES``; a step that finds none free waits for one,
as a Kubernetes pod waits for its GPU, instead of sharing a device by accident. Steps
without the tag are left as they are (they see what the notebook would see).

On a machine with fewer devices than a step asks for, the run fails before any step starts,
with a message naming the step and its cell, unless ``allow_cpu`` runs such steps with
every device hidden (``CUDA_VISIBLE_DEVICES=""``, so frameworks fall back to the CPU)
— never a CUDA error deep in a cell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jupyter_pipeline.model import Pipeline, Step

__all__ = ["GPU_RESOURCES", "GpuPool", "GpuUnavailable", "check_gpus", "detect_gpus", "gpus_wanted"]

# limit: resources that mean "one GPU" (matched case-insensitively).
GPU_RESOURCES = ("nvidia.com/gpu", "gpu")
_SMI_LINE = re.compile(r"^GPU (\d+):")


class GpuUnavailable(Exception):
    """A step asks for more GPUs than this machine has (raised before any step runs)."""


def gpus_wanted(step: Step) -> tuple[int, str | None]:
    """How many GPUs a step's ``limit:`` tags ask for, and the tag's resource name.

    Raises:
        GpuUnavailable: The value is not a whole number.
    """
    for resource, value in step.settings.limits.items():
        if resource.lower() in GPU_RESOURCES:
            try:
                count = int(value)
            except ValueError:
                raise GpuUnavailable(
                    f"step {step.name}: limit:{resource}:{value} must be a whole number of "
                    f"GPUs, e.g. limit:{resource}:1"
                ) from None
            return max(count, 0), resource
    return 0, None


def detect_gpus(environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` entries, and how they were found.

    ``CUDA_VISIBLE_DEVICES``, when set, is the list (the user has already chosen; ``""``
    or ``-1`` means none); else ``nvidia-smi -L`` lists the devices by index.
    """
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to say "none".
        if "-1" in devices:
            devices = devices[: devices.index("-1")]
        return devices, f"CUDA_VISIBLE_DEVICES={visible!r}"
    smi = shutil.which("nvidia-smi", path=env.get("PATH"))
    if smi is None:
        return [], "no nvidia-smi on PATH"
    try:
        out = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=30, check=False, env=dict(env)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi -L failed: {exc}"
    if out.returncode != 0:
        first = (out.stderr or out.stdout).strip().splitlines()
        return [], f"nvidia-smi -L failed: {first[0] if first else out.returncode}"
    devices = [m[1] for line in out.stdout.splitlines() if (m := _SMI_LINE.match(line.strip()))]
    return devices, f"nvidia-smi -L lists {len(devices)}"


def _tag_cell(step: Step, resource: str, source_nb: Any) -> int | None:
    """The cell of the step that carries the ``limit:RESOURCE:`` tag."""
    cells = source_nb.get("cells", []) if source_nb is not None else []
    for index in step.cells:
        if index < len(cells):
            tags = cells[index].get("metadata", {}).get("tags", [])
            if any(t.startswith(f"limit:{resource}:") for t in tags):
                return index
    return step.cells[0] if step.cells else None


def check_gpus(
    pipeline: Pipeline,
    devices: Sequence[str],
    found: str,
    *,
    allow_cpu: bool,
    notebook: str,
    source_nb: Any = None,
) -> dict[str, int]:
    """GPUs each step needs here; raise unless every step can have them (or ``allow_cpu``).

    Returns:
        Step name → devices to give it, for the steps that asked for GPUs: 0 where there
        are none to hide (``allow_cpu``), -1 where the step must not see the devices it
        cannot have (``allow_cpu`` with too few).

    Raises:
        GpuUnavailable: A step asks for more GPUs than ``devices`` holds, and not
            ``allow_cpu``; the message names the notebook, the step and its cell.
    """
    needs: dict[str, int] = {}
    for step in pipeline.steps:
        count, resource = gpus_wanted(step)
        if count == 0:
            continue
        if count <= len(devices):
            needs[step.name] = count
            continue
        if allow_cpu:
            needs[step.name] = -1 if devices else 0  # -1: hide the devices it cannot have
            continue
        cell = _tag_cell(step, resource or "gpu", source_nb)
        where = f" (cell {cell})" if cell is not None else ""
        have = f"{len(devices)} GPU{'s' if len(devices) != 1 else ''}"
        raise GpuUnavailable(
            f"{notebook}: step {step.name}{where} asks for {count} GPU"
            f"{'s' if count != 1 else ''} (limit:{resource}:{count}) but this machine has "
            f"{have} ({found}). Run it where there is one (e.g. compile it for Kubeflow), or "
            "pass --allow-cpu to run it on the CPU."
        )
    return needs


class GpuPool:
    """The devices of one runner, handed out whole to one step at a time (thread-safe)."""

    def __init__(self, devices: Iterable[str]) -> None:
        self.devices = list(devices)
        self._free = list(self.devices)
        self._lock = threading.Lock()

    def take(self, count: int) -> list[str] | None:
        """``count`` free devices (lowest first), or None if fewer are free."""
        with self._lock:
            if count > len(self._free):
                return None
            taken, self._free = self._free[:count], self._free[count:]
            return taken

    def give(self, devices: Iterable[str]) -> None:
        """Return devices taken with :meth:`take`."""
        with self._lock:
            self._free.extend(devices)
            self._free.sort(key=self.devices.index)

    @property
    def free(self) -> list[str]:
        """The devices nobody holds."""
        with self._lock:
            return list(self._free)
