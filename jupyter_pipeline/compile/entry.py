"""What a compiled KFP component runs inside its container (or under ``kfp.local``).

The component's generated function passes its embedded spec and its arguments (KFP
artifacts and parameter values) here. This calls the same step runtime as the local runner
(:func:`jupyter_pipeline.runtime.run_step`), then moves the saved values into the KFP output
artifacts, logs the metrics and keeps the executed notebook (.ipynb and HTML) as artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_pipeline import skip_slow_optional_imports

__all__ = ["run_component"]


def _link_tree(src: Path, dest: Path) -> None:
    """Copy a folder, hard-linking files where possible (saved values can be large)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True)


def _referenced(directory: Path) -> list[str]:
    """Sibling value folders a saved value points at (alias target, shared group)."""
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if meta.get("serializer") == "alias":
        return [meta["target"]]
    if meta.get("serializer") == "group":
        return [meta["group"]]
    return []


def _export_output(output_dir: Path, dirname: str, artifact_path: str) -> None:
    """Fill one output artifact: the value's folder plus every sibling it refers to.

    The runtime saves values that share objects as aliases or a group pointing at a sibling
    folder; each KFP artifact travels alone, so it carries those siblings with it.
    """
    target = Path(artifact_path)
    if target.is_file():
        target.unlink()
    target.mkdir(parents=True, exist_ok=True)
    todo, done = [dirname], set()
    while todo:
        name = todo.pop()
        if name in done or not (output_dir / name).is_dir():
            continue
        done.add(name)
        _link_tree(output_dir / name, target / name)
        todo.extend(_referenced(output_dir / name))


def _stage_inputs(spec: dict[str, Any], args: dict[str, Any], stage: Path) -> dict[str, str]:
    """Lay the input artifacts out as the runtime saved them: one folder per producer step.

    Values from the same producer land side by side again, so an alias or a shared group
    resolves to the very same files and the loaded objects stay shared, as in a local run.
    """
    from jupyter_pipeline.runtime.serializers import value_dirname

    inputs: dict[str, str] = {}
    for var, arg in spec["inputs"].items():
        producer = spec.get("producers", {}).get(var, "inputs")
        folder = stage / producer
        artifact = Path(args[arg].path)
        for entry in sorted(artifact.iterdir()) if artifact.is_dir() else []:
            if entry.is_dir() and not (folder / entry.name).exists():
                _link_tree(entry, folder / entry.name)
        if (folder / value_dirname(var)).is_dir():
            inputs[var] = str(folder / value_dirname(var))
        # else: its producer never defined it (a branch that did not run); the step then
        # sees a NameError exactly as the notebook would.
    return inputs


def run_component(spec_json: str | dict[str, Any], args: dict[str, Any]) -> None:
    """Run one pipeline step from inside its KFP component.

    Args:
        spec_json: The component's embedded spec (a dict, or its JSON): step name,
            generated step notebook, and which argument carries each parameter, input and
            output.
        args: The component function's arguments (KFP artifacts and parameter values).

    Raises:
        RuntimeError: The step failed (after its executed notebook was saved as an artifact).
    """
    skip_slow_optional_imports()  # (1-2 s per pod start otherwise)
    from jupyter_pipeline.runtime import run_step
    from jupyter_pipeline.runtime.api import StepRequest
    from jupyter_pipeline.runtime.serializers import value_dirname

    spec = json.loads(spec_json) if isinstance(spec_json, str) else spec_json
    work = Path(tempfile.mkdtemp(prefix=f"jp-{spec['step']}-"))
    output_dir = work / "outputs"
    executed = work / f"{spec['step']}.ipynb"
    request = StepRequest(
        step_notebook=spec["notebook"],
        step=spec["step"],
        source_notebook=spec.get("source_notebook", ""),
        inputs=_stage_inputs(spec, args, work / "inputs"),
        parameters={p: args[arg] for p, arg in spec["parameters"].items()},
        output_dir=str(output_dir),
        outputs=list(spec["outputs"]),
        executed_notebook=str(executed),
        html=bool(spec.get("html")),
        cwd=spec.get("workdir") or os.getcwd(),
        kernel_name=spec.get("kernel_name") or "python3",
        # Step output goes to the container's stdout: that is the log KFP's UI shows.
        log_path="/dev/stdout" if os.path.exists("/dev/stdout") else None,
    )
    result = run_step(request)

    notebook_artifact = args[spec["executed_notebook"]]
    if Path(result.executed_notebook).exists():
        Path(notebook_artifact.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.executed_notebook, notebook_artifact.path)
    notebook_artifact.metadata["step"] = spec["step"]
    if spec.get("html") and result.html and Path(result.html).exists():
        html_artifact = args[spec["html"]]
        Path(html_artifact.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.html, html_artifact.path)

    if result.status != "succeeded":
        failure = result.failure
        message = failure.message if failure else f"step {spec['step']} failed"
        if failure and failure.traceback:
            print("\n".join(failure.traceback), file=sys.stderr)
        raise RuntimeError(message)

    if result.stopped_at is not None and spec["outputs"]:
        # sys.exit() ended the notebook (papermill: a clean stop). Locally the later steps
        # are skipped; a KFP run cannot skip its remaining tasks, and they need outputs this
        # step never saved: stop the run here with the reason rather than a missing file.
        raise RuntimeError(
            f"step {spec['step']}: the notebook stopped at cell {result.stopped_at} "
            "(sys.exit()); the later steps cannot run on Kubeflow without this step's outputs"
        )
    saved = {value.name: value for value in result.outputs}
    for var, arg in spec["outputs"].items():
        artifact = args[arg]
        _export_output(output_dir, value_dirname(var), artifact.path)
        value = saved.get(var)
        if value is not None:
            # The digest lets anyone compare this value with a local run's without loading it.
            artifact.metadata.update(
                {
                    "serializer": value.serializer,
                    "type": value.type,
                    "digest": value.digest,
                    "size": value.size,
                }
            )
    if spec.get("metrics"):
        metrics = args[spec["metrics"]]
        for name, value in sorted(result.metrics.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                metrics.metadata[name] = value  # KFP metrics are numbers; keep the rest visible
            else:
                metrics.log_metric(name, float(value))
    shutil.rmtree(work, ignore_errors=True)
