"""A sweep as a Katib ``Experiment`` (kubeflow.org/v1beta1), and the trial that runs in it.

Katib picks the parameter sets (``grid`` over the ``-g`` values, or ``random`` with
``--random N --seed S``) and runs one trial per set: a Kubernetes Job whose container runs
the notebook's compiled pipeline (the same YAML ``compile`` writes, shipped in a ConfigMap
beside the Experiment) with the trial's values, under ``kfp.local`` inside the pod
(:func:`run_compiled`), then prints the metrics step's values as ``name=value`` lines, which
Katib's ``StdOut`` metrics collector reads; the objective is one of them.

What that trial does not do: it does not spread the pipeline's steps over pods (they run one
after another in the trial's pod, on the trial's image and resources). To spread them, use
``compile --sweep`` (one KFP run, a ``ParallelFor`` over the trials) instead of Katib.
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import ParameterType, Pipeline
from jupyter_pipeline.runners.sweep import SweepPlan

__all__ = ["PIPELINE_PATH", "katib_documents", "run_compiled"]

PIPELINE_PATH = "/jupyter-pipeline/pipeline.yaml"  # where the trial's pod sees the pipeline
_CONTAINER = "trial"
_NUMERIC = (ParameterType.int, ParameterType.float)


def _k8s_name(text: str, limit: int = 40) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:limit].rstrip("-") or "sweep"


def _katib_value(value: Any) -> str:
    # Katib carries every value as a string; -p parses it back (a Python literal, else a
    # string), so non-strings are written as Python literals (True, not JSON's true).
    return value if isinstance(value, str) else repr(value)


def katib_documents(
    pipeline: Pipeline,
    plan: SweepPlan,
    pipeline_yaml: str,
    *,
    image: str,
    metric: str,
    maximize: bool = True,
    parallelism: int | None = None,
    sample: int | None = None,
    seed: int | None = None,
    namespace: str | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """The ConfigMap holding the compiled pipeline and the Katib Experiment that sweeps it.

    Args:
        pipeline: The analyzed pipeline.
        plan: The sweep (axes, fixed values).
        pipeline_yaml: The notebook's compiled pipeline (``compile`` output).
        image: Trial image: holds the project (and the notebook's packages).
        metric: The objective: one of the metrics step's metrics.
        maximize: Larger is better (else smaller).
        parallelism: Trials at once (default: all).
        sample: With a number, Katib's ``random`` algorithm tries that many sets from the
            axes; else ``grid`` tries them all.
        seed: ``random_state`` of the random algorithm.
        namespace: Namespace of both objects (default: kubectl's).
        name: Experiment name (default: the pipeline's name + ``-sweep``).

    Returns:
        ``[ConfigMap, Experiment]``, ready for ``kubectl apply -f``.
    """
    name = _k8s_name(name or f"{pipeline.name}-sweep")
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**meta, "name": f"{name}-pipeline"},
        "data": {"pipeline.yaml": pipeline_yaml},
    }
    types = {p.name: p.type for p in pipeline.parameters}
    parameters = []
    for axis, values in plan.axes.items():
        kind = "discrete" if types[axis] in _NUMERIC else "categorical"
        parameters.append(
            {
                "name": axis,
                "parameterType": kind,
                "feasibleSpace": {"list": [_katib_value(v) for v in values]},
            }
        )
    args = [f"{k}={_katib_value(v)}" for k, v in plan.base.items()]
    args += [f"{axis}=${{trialParameters.{axis}}}" for axis in plan.axes]
    command = ["jupyter-pipeline", "run-compiled", PIPELINE_PATH, "--print-metrics"]
    for arg in args:
        command += ["-p", arg]
    others = [m.name for m in pipeline.metrics if m.name != metric]
    objective: dict[str, Any] = {
        "type": "maximize" if maximize else "minimize",
        "objectiveMetricName": metric,
    }
    if others:
        objective["additionalMetricNames"] = others
    # The trial prints its metrics last; a cell's own output may print the same names
    # earlier, so the latest value counts (Katib's default would be the best one seen).
    objective["metricStrategies"] = [{"name": m, "value": "latest"} for m in [metric, *others]]
    algorithm: dict[str, Any] = {"algorithmName": "random" if sample else "grid"}
    if sample and seed is not None:
        algorithm["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}]
    trials = len(plan.trials)
    experiment = {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": meta,
        "spec": {
            "objective": objective,
            "algorithm": algorithm,
            "parallelTrialCount": min(parallelism or trials, trials),
            "maxTrialCount": trials,
            "maxFailedTrialCount": trials,
            "parameters": parameters,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "trialTemplate": {
                "primaryContainerName": _CONTAINER,
                "trialParameters": [
                    {
                        "name": axis,
                        "reference": axis,
                        "description": f"pipeline parameter {axis} ({types[axis].value})",
                    }
                    for axis in plan.axes
                ],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "backoffLimit": 0,
                        "template": {
                            "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": _CONTAINER,
                                        "image": image,
                                        "command": command,
                                        "volumeMounts": [
                                            {
                                                "name": "pipeline",
                                                "mountPath": str(Path(PIPELINE_PATH).parent),
                                                "readOnly": True,
                                            }
                                        ],
                                    }
                                ],
                                "volumes": [
                                    {
                                        "name": "pipeline",
                                        "configMap": {"name": config_map["metadata"]["name"]},
                                    }
                                ],
                            },
                        },
                    },
                },
            },
        },
    }
    return [config_map, experiment]


def _coerce(value: Any, kind: str) -> Any:
    """A ``-p`` value as the compiled pipeline's input type wants it (Katib sends strings)."""
    if kind == "STRING" and not isinstance(value, str):
        return _katib_value(value)
    if kind == "NUMBER_DOUBLE" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def run_compiled(
    pipeline_yaml: str | Path,
    arguments: Mapping[str, Any] | None = None,
    *,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Run a compiled pipeline YAML with ``kfp.local`` in this environment; return its metrics.

    Every task runs as a subprocess here (``SubprocessRunner(use_venv=False)``): the step
    runtime of this installation runs each step notebook. ``arguments`` are coerced to the
    pipeline's input types (``3`` for a string input becomes ``"3"``).

    Returns:
        The metrics step's values (empty if the pipeline has none).

    Raises:
        ValueError: An argument names no input of the pipeline.
        RuntimeError: A task failed (kfp.local's error).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import kfp.local
        from kfp import components

        pipeline = components.load_component_from_file(str(pipeline_yaml))
        inputs = pipeline.component_spec.inputs or {}
        args = {}
        for key, value in (arguments or {}).items():
            if key not in inputs:
                known = ", ".join(inputs) or "none"
                raise ValueError(f"the pipeline has no input {key!r}; its inputs: {known}")
            args[key] = _coerce(value, str(inputs[key].type))
        task = _metrics_task(Path(pipeline_yaml))
        with tempfile.TemporaryDirectory(prefix="jp-compiled-") as tmp:
            pipeline_root = Path(root) if root is not None else Path(tmp)
            pipeline_root.mkdir(parents=True, exist_ok=True)
            before = set(pipeline_root.iterdir())
            kfp.local.init(
                runner=kfp.local.SubprocessRunner(use_venv=False),
                pipeline_root=str(pipeline_root),
            )
            pipeline(**args)
            if task is None:
                return {}
            (run_dir,) = set(pipeline_root.iterdir()) - before
            output = json.loads((run_dir / task / "executor_output.json").read_text())
            return dict(output["artifacts"]["metrics"]["artifacts"][0].get("metadata", {}))


def _metrics_task(pipeline_yaml: Path) -> str | None:
    """The task of a compiled pipeline that reports its metrics (a ``system.Metrics`` output)."""
    import yaml

    spec = next(yaml.safe_load_all(pipeline_yaml.read_text(encoding="utf-8")))
    reporting = {
        name
        for name, component in spec.get("components", {}).items()
        for artifact in component.get("outputDefinitions", {}).get("artifacts", {}).values()
        if artifact.get("artifactType", {}).get("schemaTitle") == "system.Metrics"
    }
    tasks = spec.get("root", {}).get("dag", {}).get("tasks", {})
    for task, body in tasks.items():
        if body.get("componentRef", {}).get("name") in reporting:
            return str(task)
    return None
