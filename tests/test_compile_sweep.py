"""Sweeps on Kubeflow: ``compile --sweep`` (ParallelFor) and ``--katib`` (a Katib Experiment).

The ParallelFor pipeline is golden (``tests/golden/compile_sweep/``; ``pytest
--update-golden`` rewrites it) and runs under ``kfp.local``; the Katib Experiment is
validated with the pydantic models Kubeflow generates from Katib's OpenAPI spec
(``kubeflow-katib-api`` on PyPI, a test extra), and its trial's command is run here as
Katib would run it in a trial pod.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import warnings
from pathlib import Path

import pytest
import yaml
from helpers import code_cell as _cell
from helpers import write_nb
from kubeflow_katib_api.models import IoK8sApiCoreV1PodTemplateSpec, V1beta1Experiment
from pydantic import ValidationError

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.cli import main
from jupyter_pipeline.compile import KfpConfig, compile_package
from jupyter_pipeline.compile.katib import PIPELINE_PATH, katib_documents
from jupyter_pipeline.compile.sweep import TRIALS, build_sweep_pipeline_func, compile_sweep_package
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.sweep import SweepRunner, plan_sweep
from jupyter_pipeline.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "notebooks" / "diabetes_parameters_metrics.ipynb"
GOLDEN = ROOT / "tests" / "golden" / "compile_sweep" / "diabetes_parameters_metrics.yaml"
AXES = {"model_kind": ["ridge", "lasso"], "alpha": [0.1, 1.0, 10.0]}


def _example_plan():
    pipeline = analyze_notebook(EXAMPLE)
    return pipeline, plan_sweep(pipeline, AXES, {"n_bootstrap": 20})


def _stable(text: str) -> str:
    """The YAML without the header comment of the trials' default.

    kfp writes that comment from the IR's protobuf Struct, whose key order varies from process
    to process ({'alpha', 'model_kind'} or the reverse); the default itself, in the body,
    is compared in full.
    """
    return "".join(
        line for line in text.splitlines(True) if not line.startswith("#    sweep_trials: ")
    )


def test_sweep_yaml_is_golden_with_shared_steps_outside_the_parallel_for(request):
    pipeline, plan = _example_plan()
    package = compile_sweep_package(
        pipeline, read_notebook(EXAMPLE), plan, parallelism=3, config=KfpConfig()
    )
    if request.config.getoption("--update-golden"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(package.yaml, encoding="utf-8")
    expected = _stable(GOLDEN.read_text(encoding="utf-8"))
    actual = _stable(package.yaml)
    if actual != expected:
        diff = difflib.unified_diff(expected.splitlines(True), actual.splitlines(True))
        pytest.fail(
            "the sweep compiles differently from its golden file:\n" + "".join(list(diff)[:40])
        )

    spec = next(yaml.safe_load_all(expected))
    root = spec["root"]
    # The swept parameters are not pipeline inputs; the trials are, defaulting to the plan.
    inputs = root["inputDefinitions"]["parameters"]
    assert set(inputs) == {"seed", "n_bootstrap", "standardize", "features", TRIALS}
    assert inputs["n_bootstrap"]["defaultValue"] == 20  # the sweep's -p value
    assert inputs[TRIALS]["defaultValue"] == plan.trials and len(plan.trials) == 6
    # Shared steps are root tasks (run once); the loop holds the dependent ones.
    tasks = root["dag"]["tasks"]
    (loop_name,) = [n for n, t in tasks.items() if "parameterIterator" in t]
    loop = tasks[loop_name]
    assert {t["taskInfo"]["name"] for n, t in tasks.items() if n != loop_name} == {
        "load_data",
        "add_features",
        "split",
    }
    assert loop["iteratorPolicy"]["parallelismLimit"] == 3
    assert loop["parameterIterator"]["items"]["inputParameter"] == f"pipelinechannel--{TRIALS}"
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {t["taskInfo"]["name"] for t in body.values()} == {
        "train",
        "evaluate",
        "pipeline-metrics",
    }
    # Inside the loop, the swept values come from the loop item, the others from the pipeline.
    train = body["train"]["inputs"]["parameters"]
    assert train["alpha"]["parameterExpressionSelector"] == 'parseJson(string_value)["alpha"]'
    assert (
        train["model_kind"]["parameterExpressionSelector"]
        == 'parseJson(string_value)["model_kind"]'
    )
    assert train["standardize"]["componentInputParameter"] == "pipelinechannel--standardize"
    # ...and the shared steps' artifacts from the tasks outside the loop.
    x_train = body["train"]["inputs"]["artifacts"]["X_train"]
    assert x_train["componentInputArtifact"].startswith("pipelinechannel--split-")


# ------------------------------------------------------------------------ Katib


def _dropped(wrote, kept, path: str = "$") -> list[str]:
    """The paths of ``wrote`` that ``kept`` lacks or holds differently (value or type)."""
    if isinstance(wrote, dict):
        if not isinstance(kept, dict):
            return [path]
        return [
            p
            for key, value in wrote.items()
            for p in (
                _dropped(value, kept[key], f"{path}.{key}") if key in kept else [f"{path}.{key}"]
            )
        ]
    if isinstance(wrote, list):
        if not isinstance(kept, list) or len(kept) != len(wrote):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(wrote, kept, strict=True))
            for p in _dropped(a, b, f"{path}[{i}]")
        ]
    return [] if type(wrote) is type(kept) and wrote == kept else [path]


def _katib_check(experiment: dict) -> list[str]:
    """Parse ``experiment`` with Katib's models; return the fields they do not know.

    The models (kubeflow-katib-api, generated from Katib's OpenAPI spec) type every field
    strictly (``StrictStr``, ``StrictInt``: a wrong type raises ``ValidationError``) but, being
    pydantic models, silently ignore unknown fields. So a round trip through them must give
    back every field we wrote: whatever is dropped is not Katib's (a typo). The trial spec is
    free-form in Katib (``unstructured.Unstructured``); its Job's pod template is checked the
    same way against the Kubernetes models the package ships.
    """
    model = V1beta1Experiment.from_dict(experiment)
    dropped = _dropped(experiment, model.to_dict())
    job = experiment["spec"]["trialTemplate"]["trialSpec"]
    pod = job["spec"]["template"]
    kept = IoK8sApiCoreV1PodTemplateSpec.from_dict(pod).to_dict()
    dropped += _dropped(pod, kept, "$.spec.trialTemplate.trialSpec.spec.template")
    return dropped


def test_katib_experiment_validates_against_katibs_models(tmp_path, capsys):
    out = tmp_path / "katib.yaml"
    argv = ["compile", str(EXAMPLE), "-o", str(tmp_path / "s.yaml"), "--katib", str(out)]
    argv += ["-g", "model_kind=ridge,lasso", "-g", "alpha=0.1,1,10", "-p", "n_bootstrap=20"]
    assert main([*argv, "--parallelism", "2", "--minimize", "--metric", "mae"]) == 0
    assert "Katib Experiment" in capsys.readouterr().out
    config_map, experiment = yaml.safe_load_all(out.read_text())
    assert _katib_check(experiment) == []
    # The validation bites: a misspelt field (in Katib's part or in the trial's pod) is
    # dropped by the round trip, and a count of the wrong type is rejected.
    bad = copy.deepcopy(experiment)
    bad["spec"]["objective"]["objectiveMetric"] = "mae"
    assert _katib_check(bad) == ["$.spec.objective.objectiveMetric"]
    bad = copy.deepcopy(experiment)
    bad["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0][
        "comand"
    ] = ["python"]
    assert _katib_check(bad) == [
        "$.spec.trialTemplate.trialSpec.spec.template.spec.containers[0].comand"
    ]
    bad = copy.deepcopy(experiment)
    bad["spec"]["parallelTrialCount"] = "2"
    with pytest.raises(ValidationError, match="parallelTrialCount"):
        _katib_check(bad)

    spec = experiment["spec"]
    assert experiment["apiVersion"] == "kubeflow.org/v1beta1" and experiment["kind"] == "Experiment"
    assert spec["objective"] == {
        "type": "minimize",
        "objectiveMetricName": "mae",
        "additionalMetricNames": ["r2", "r2_spread"],
        "metricStrategies": [{"name": m, "value": "latest"} for m in ("mae", "r2", "r2_spread")],
    }
    assert spec["algorithm"] == {"algorithmName": "grid"}
    assert (spec["maxTrialCount"], spec["parallelTrialCount"]) == (6, 2)
    # Katib's documented parameter types and its string-valued feasible lists.
    assert spec["parameters"] == [
        {
            "name": "model_kind",
            "parameterType": "categorical",
            "feasibleSpace": {"list": ["ridge", "lasso"]},
        },
        {
            "name": "alpha",
            "parameterType": "discrete",
            "feasibleSpace": {"list": ["0.1", "1.0", "10.0"]},
        },
    ]
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    template = spec["trialTemplate"]
    assert [p["name"] for p in template["trialParameters"]] == ["model_kind", "alpha"]
    job = template["trialSpec"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == template["primaryContainerName"]
    # Every trial parameter is used by the command (Katib rejects unused ones).
    command = " ".join(container["command"])
    for p in template["trialParameters"]:
        assert f"${{trialParameters.{p['reference']}}}" in command
    # The pipeline the trial runs is the notebook's plain compiled pipeline, mounted from the
    # ConfigMap.
    assert config_map["kind"] == "ConfigMap"
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert container["volumeMounts"][0]["mountPath"] == str(Path(PIPELINE_PATH).parent)
    plain = compile_package(analyze_notebook(EXAMPLE), read_notebook(EXAMPLE), config=KfpConfig())
    assert config_map["data"]["pipeline.yaml"] == plain.yaml

    # --random N --seed S: Katib's random algorithm with that seed.
    pipeline, plan = _example_plan()
    random = katib_documents(pipeline, plan, "x", image="i", metric="r2", sample=3, seed=5)[1]
    assert _katib_check(random) == []
    assert random["spec"]["algorithm"] == {
        "algorithmName": "random",
        "algorithmSettings": [{"name": "random_state", "value": "5"}],
    }


# ------------------------------------------------------------------------ kfp.local


def _toy(tmp_path: Path) -> Path:
    return write_nb(
        tmp_path / "toy.ipynb",
        [
            _cell("lr = 0.1\ndepth = 3\nname = 'a'", "pipeline-parameters"),
            _cell("data = list(range(10))", "step:load"),
            _cell("scaled = [x * lr for x in data]", "step:scale"),
            _cell("score = round(sum(scaled) * depth, 6)\ntag = name + str(depth)", "step:train"),
            _cell("print(score)", "pipeline-metrics"),
        ],
    )


@pytest.mark.kernel
def test_sweep_pipeline_and_katib_trial_run_under_kfp_local(tmp_path, capsys):
    import kfp.local

    nb_path = _toy(tmp_path)
    pipeline = analyze_notebook(nb_path)
    plan = plan_sweep(pipeline, {"depth": [3, 5]}, {"lr": 1.0})
    local = SweepRunner(RunStore(tmp_path / "st" / "runs.sqlite"), max_parallel=2).run(
        pipeline, nb_path, plan
    )
    expected = [t.metrics for t in local.trials]
    assert expected == [{"score": 135.0}, {"score": 225.0}]

    root = tmp_path / "kfp"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        func, plans = build_sweep_pipeline_func(
            pipeline, nb_path, plan, config=KfpConfig(), workdir=str(tmp_path), html=False
        )
        kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        func()
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    # `load` ran once, outside the loop; every iteration ran the dependent steps.
    assert (run_dir / plans["load"].task / "executor_output.json").exists()
    iterations = sorted(p for p in run_dir.iterdir() if re.search(r"iteration-\d+$", p.name))
    assert len(iterations) == 2
    assert not any((it / plans["load"].task).exists() for it in iterations)
    got = []
    for it in iterations:
        output = json.loads(
            (it / plans["pipeline-metrics"].task / "executor_output.json").read_text()
        )
        got.append(output["artifacts"]["metrics"]["artifacts"][0]["metadata"])
    assert got == expected

    # The Katib trial: its container's command, with Katib's substitution, run here.
    out = tmp_path / "katib.yaml"
    argv = ["compile", str(nb_path), "--katib", str(out), "-g", "depth=3,5", "-p", "lr=1.0"]
    assert main(argv) == 0
    config_map, experiment = yaml.safe_load_all(out.read_text())
    pipeline_file = tmp_path / "pipeline.yaml"
    pipeline_file.write_text(config_map["data"]["pipeline.yaml"])
    container = experiment["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    command = [
        arg.replace("${trialParameters.depth}", "5").replace(PIPELINE_PATH, str(pipeline_file))
        for arg in container["command"]
    ]
    assert command[0] == "jupyter-pipeline"
    capsys.readouterr()
    assert main([*command[1:], "--root", str(tmp_path / "trial")]) == 0
    assert "score=225.0" in capsys.readouterr().out.splitlines()
