"""KFP compiler: what the compiled IR holds (kfp's own compiler; no kernels, no cluster).

Each test builds a small notebook in-test, analyzes it, compiles it with kfp and inspects the
pipeline spec: artifact types inferred from the producing statement, parameters with types
and defaults, resources, caching, retries, images, packages, env vars and secrets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata as md
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.compile import (
    CompileError,
    KfpConfig,
    SecretEnv,
    compile_package,
    compile_pipeline,
)
from jupyter_pipeline.compile.artifacts import infer_artifact_kinds
from jupyter_pipeline.compile.config import DEFAULT_IMAGE, ConfigError, load_config
from jupyter_pipeline.compile.packages import write_image_files

ROOT = Path(__file__).resolve().parent.parent


def make_nb(*cells, metadata=None):
    """Cells as (source, tags) tuples, or a plain string for markdown."""
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
    }
    nb.metadata.update(metadata or {})
    for i, cell in enumerate(cells):
        if isinstance(cell, str):
            c = new_markdown_cell(cell)
        else:
            src, tags = cell
            c = new_code_cell(src)
            if tags:
                c.metadata["tags"] = list(tags)
        c.id = f"cell{i}"
        nb.cells.append(c)
    return nb


def compiled(nb, name="nb.ipynb", **options):
    pipeline = analyze(nb, name)
    options.setdefault("config", KfpConfig())
    return pipeline, compile_package(pipeline, nb, **options)


def executor(spec, task):
    comp = spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    label = spec["components"][comp]["executorLabel"]
    return spec["deploymentSpec"]["executors"][label]["container"]


def component(spec, task):
    return spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]


def artifact_types(spec, task, direction="outputDefinitions"):
    arts = component(spec, task).get(direction, {}).get("artifacts", {})
    return {name: a["artifactType"]["schemaTitle"] for name, a in arts.items()}


# ---------------------------------------------------------------------------- artifact types


def test_artifact_type_follows_the_producing_statement_not_the_name():
    nb = make_nb(
        (
            "import pandas as pd\nimport numpy as np\nfrom sklearn.linear_model import Ridge",
            ["imports"],
        ),
        (
            "frame = pd.read_csv('data.csv') if False else pd.DataFrame({'a': [1, 2]})\n"
            "clean = frame.dropna()\n"
            "arr = np.arange(4)\n"
            "est = Ridge(alpha=1.0)\n"
            "model = {'not': 'a model'}\n"
            "df = [1, 2, 3]\n"
            "fitted = Ridge().fit(arr.reshape(-1, 1), arr)\n"
            "col = clean['a']\n"
            "n = len(frame)\n"
            "preds = fitted.predict(arr.reshape(-1, 1))\n",
            ["step:make"],
        ),
        (
            "print(frame, clean, arr, est, model, df, fitted, col, n, preds)",
            ["step:use"],
        ),
    )
    pipeline = analyze(nb, "t.ipynb")
    kinds = infer_artifact_kinds(pipeline, nb)
    got = {var: kind for (step, var), kind in kinds.items() if step == "make"}
    assert got == {
        "frame": "Dataset",
        "clean": "Dataset",
        "arr": "Dataset",
        "est": "Model",
        "model": "Artifact",  # named "model", holds a dict
        "df": "Artifact",  # named "df", holds a list
        "fitted": "Model",
        "col": "Dataset",
        "n": "Artifact",
        "preds": "Dataset",
    }


def test_artifact_types_reach_the_ir_and_match_between_producer_and_consumer():
    nb = make_nb(
        ("import numpy as np\nfrom sklearn.linear_model import LinearRegression", ["imports"]),
        ("X = np.ones((4, 1))\ny = np.arange(4.0)", ["step:data"]),
        ("model = LinearRegression()\nmodel.fit(X, y)", ["step:train"]),
        ("score = model.score(X, y)\nprint(score)", ["step:score"]),
    )
    _, package = compiled(nb)
    spec = package.pipeline_spec
    assert artifact_types(spec, "data") == {
        "X": "system.Dataset",
        "y": "system.Dataset",
        "executed_notebook": "system.Artifact",
        "executed_notebook_html": "system.HTML",
    }
    assert artifact_types(spec, "train")["model"] == "system.Model"
    assert artifact_types(spec, "score", "inputDefinitions") == {
        "X": "system.Dataset",
        "y": "system.Dataset",
        "model": "system.Model",
    }
    inputs = spec["root"]["dag"]["tasks"]["score"]["inputs"]["artifacts"]
    assert inputs["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model",
        "producerTask": "train",
    }


def test_variable_both_read_and_rewritten_gets_distinct_input_and_output_names():
    nb = make_nb(
        ("items = [1]", ["step:a"]),
        ("items = items + [2]", ["step:b"]),
        ("print(items)", ["step:c"]),
    )
    _, package = compiled(nb)
    spec = package.pipeline_spec
    assert "items_in" in artifact_types(spec, "b", "inputDefinitions")
    assert "items" in artifact_types(spec, "b")
    assert spec["root"]["dag"]["tasks"]["c"]["inputs"]["artifacts"]["items"][
        "taskOutputArtifact"
    ] == {"outputArtifactKey": "items", "producerTask": "b"}


# ---------------------------------------------------------------------------- parameters, metrics


def test_parameters_become_typed_pipeline_parameters_with_defaults():
    nb = make_nb(
        (
            "lr = 0.1\nepochs = 3\nname = 'x'\nflag = True\nsizes = [1, 2]\nopts = {'a': 1}",
            ["parameters"],
        ),
        ("print(lr, epochs, name, flag, sizes, opts)", ["step:train"]),
    )
    _, package = compiled(nb)
    spec = package.pipeline_spec
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in params.items()} == {
        "lr": "NUMBER_DOUBLE",
        "epochs": "NUMBER_INTEGER",
        "name": "STRING",
        "flag": "BOOLEAN",
        "sizes": "LIST",
        "opts": "STRUCT",
    }
    assert {k: v["defaultValue"] for k, v in params.items()} == {
        "lr": 0.1,
        "epochs": 3,
        "name": "x",
        "flag": True,
        "sizes": [1, 2],
        "opts": {"a": 1},
    }
    task_params = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert task_params["lr"] == {"componentInputParameter": "lr"}
    assert set(task_params) == set(params)


def test_metrics_step_reports_an_output_metrics_artifact():
    nb = make_nb(
        ("acc = 0.5", ["step:train"]),
        ("acc", ["pipeline-metrics"]),
    )
    pipeline, package = compiled(nb)
    metrics_step = next(s for s in pipeline.steps if s.role == "metrics")
    types = artifact_types(package.pipeline_spec, metrics_step.name)
    assert types["metrics"] == "system.Metrics"
    assert "metrics" not in artifact_types(package.pipeline_spec, "train")


def test_step_notebook_is_embedded_in_the_component():
    nb = make_nb(("a = 41", ["step:one"]), ("print(a + 1)", ["step:two"]))
    _, package = compiled(nb)
    container = executor(package.pipeline_spec, "two")
    source = container["command"][-1]
    assert "from jupyter_pipeline.compile.entry import run_component" in source
    assert "print(a + 1)" in source  # the user's cell, inside the embedded step notebook
    assert container["image"] == DEFAULT_IMAGE
    # An image that holds the project installs nothing at pod start.
    assert not any("pip install" in part for part in container["command"])


# ---------------------------------------------------------------------------- settings


def test_limits_caching_retries_and_display_names_are_emitted():
    nb = make_nb(
        ("x = 1", ["step:Prepare_Data", "cache:disabled"]),
        (
            "y = x + 1",
            ["step:train", "limit:cpu:2", "limit:memory:4Gi", "limit:nvidia.com/gpu:1", "retry:3"],
        ),
        (
            "z = x * 2",
            [
                "step:other",
                "limit:gpu:2",
                "limit:cpu-request:500m",
                "limit:memory-request:1Gi",
                "cache:enabled",
            ],
        ),
        ("print(y, z)", ["step:report"]),
    )
    _, package = compiled(nb)
    spec = package.pipeline_spec
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["prepare-data"]["taskInfo"]["name"] == "Prepare_Data"
    assert tasks["prepare-data"]["cachingOptions"] == {}  # enableCache false is proto default
    assert tasks["other"]["cachingOptions"] == {"enableCache": True}
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    assert "retryPolicy" not in tasks["report"]
    train = executor(spec, "train")["resources"]
    assert train["resourceCpuLimit"] == "2"
    assert train["resourceMemoryLimit"] == "4Gi"
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "1"
    other = executor(spec, "other")["resources"]
    assert other["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert other["accelerator"]["resourceCount"] == "2"
    assert other["resourceCpuRequest"] == "500m"
    assert other["resourceMemoryRequest"] == "1Gi"
    assert "resources" not in executor(spec, "report")


def test_task_names_are_kfps_own_for_steps_named_after_builtins():
    from jupyter_pipeline.compile.builder import build_components, task_names
    from jupyter_pipeline.runners.kfp import _task_names

    nb = make_nb(
        ("x = [1, 2]", ["step:list"]),
        ("t = str(len(x))", ["step:type"]),
        ("print(t)", ["step:print"]),
        ("k = 2", ["step:2d"]),
        ("j = k + 1", ["step:v-2d"]),
        ("print(j)", ["step:dsl"]),
    )
    pipeline, package = compiled(nb)
    steps = [s.name for s in pipeline.steps]
    assert steps == ["list", "type", "print", "s-2d", "v-2d", "dsl"]
    # The task keys kfp gave in the compiled IR, in the order the tasks were added.
    given = {s: package.components[s].task for s in steps}
    assert set(given.values()) == set(package.pipeline_spec["root"]["dag"]["tasks"])
    assert given["list"] == "list" and given["print"] == "print"
    assert task_names(pipeline) == given
    # Known before the pipeline is built, and what the KFP runner maps states back with.
    _, plans, _ = build_components(pipeline, nb, config=KfpConfig())
    assert {s: plans[s].task for s in steps} == given
    names = _task_names(pipeline)
    assert all(names[task] == step for step, task in given.items() if task not in steps)
    assert "list-" not in names and "print-" not in names


def test_unknown_resource_is_a_compile_error_naming_the_step():
    nb = make_nb(("x = 1", ["step:a", "limit:ephemeral-storage:1Gi"]))
    with pytest.raises(CompileError, match=r"step 'a': limit:ephemeral-storage:1Gi"):
        compiled(nb)


def test_parallel_branches_stay_parallel():
    nb = make_nb(
        ("base = 1", ["step:load"]),
        ("left = base + 1", ["step:left"]),
        ("right = base + 2", ["step:right"]),
        ("print(left + right)", ["step:join"]),
    )
    _, package = compiled(nb)
    tasks = package.pipeline_spec["root"]["dag"]["tasks"]
    assert tasks["left"]["dependentTasks"] == ["load"]
    assert tasks["right"]["dependentTasks"] == ["load"]
    assert sorted(tasks["join"]["dependentTasks"]) == ["left", "right"]


def test_prev_edge_without_data_becomes_a_dependency():
    nb = make_nb(
        ("open('f.txt', 'w').write('x')", ["step:write"]),
        ("print('after')", ["step:after", "prev:write"]),
    )
    _, package = compiled(nb)
    assert package.pipeline_spec["root"]["dag"]["tasks"]["after"]["dependentTasks"] == ["write"]


def test_image_precedence_tag_then_cli_then_notebook_then_config():
    cells = (("a = 1", ["step:tagged", "image:reg/tagged:1"]), ("print(a)", ["step:plain"]))
    nb = make_nb(*cells)
    _, package = compiled(nb, image="reg/cli:1", config=KfpConfig(image="reg/config:1"))
    spec = package.pipeline_spec
    assert executor(spec, "tagged")["image"] == "reg/tagged:1"
    assert executor(spec, "plain")["image"] == "reg/cli:1"
    _, package = compiled(nb, config=KfpConfig(image="reg/config:1"))
    assert executor(package.pipeline_spec, "plain")["image"] == "reg/config:1"
    # The notebook's default (Kale's docker_image or jupyter_pipeline.kfp.image) is below the
    # command line and above the configured default.
    for meta in (
        {"kubeflow_notebook": {"docker_image": "reg/notebook:1"}},
        {"jupyter_pipeline": {"kfp": {"image": "reg/notebook:1"}}},
    ):
        with_meta = make_nb(*cells, metadata=meta)
        _, package = compiled(with_meta, image="reg/cli:1", config=KfpConfig(image="reg/c:1"))
        assert executor(package.pipeline_spec, "plain")["image"] == "reg/cli:1"
        assert executor(package.pipeline_spec, "tagged")["image"] == "reg/tagged:1"
        _, package = compiled(with_meta, config=KfpConfig(image="reg/config:1"))
        assert executor(package.pipeline_spec, "plain")["image"] == "reg/notebook:1"


def test_cli_image_order_with_config_file_and_environment(tmp_path, monkeypatch, capsys):
    from jupyter_pipeline.cli import main

    config = tmp_path / "kfp.toml"
    config.write_text('image = "reg/file:1"\n')
    monkeypatch.setenv("JUPYTER_PIPELINE_KFP_CONFIG", str(config))
    monkeypatch.setenv("JUPYTER_PIPELINE_IMAGE", "reg/env:1")
    cells = (("a = 1", ["step:one"]),)
    plain, with_meta = tmp_path / "plain.ipynb", tmp_path / "meta.ipynb"
    nbformat.write(make_nb(*cells), plain)
    nbformat.write(
        make_nb(*cells, metadata={"jupyter_pipeline": {"kfp": {"image": "reg/nb:1"}}}), with_meta
    )
    out = tmp_path / "o.yaml"

    def image(*args):
        assert main(["compile", *args, "-o", str(out)]) == 0
        spec = next(yaml.safe_load_all(out.read_text()))
        return executor(spec, "one")["image"]

    assert image(str(with_meta), "--image", "reg/cli:1") == "reg/cli:1"
    assert image(str(with_meta)) == "reg/nb:1"
    assert image(str(plain)) == "reg/env:1"
    monkeypatch.delenv("JUPYTER_PIPELINE_IMAGE")
    assert image(str(plain)) == "reg/file:1"
    capsys.readouterr()


def test_pip_mode_installs_only_each_steps_own_imports():
    nb = make_nb(
        ("import json\nimport numpy as np", ["step:nums"]),
        ("arr = np.arange(3)", []),
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1]})", ["step:frame"]),
        ("print(json.dumps(len(df)))", ["step:report"]),
    )
    _, package = compiled(
        nb,
        packages_mode="pip",
        config=KfpConfig(base_image="python:3.11", project_requirement="jp==1"),
    )
    spec = package.pipeline_spec

    def installed(task):
        return " ".join(executor(spec, task)["command"])

    np_pin = f"numpy=={md.version('numpy')}"
    pd_pin = f"pandas=={md.version('pandas')}"
    assert np_pin in installed("nums") and pd_pin not in installed("nums")
    assert pd_pin in installed("frame") and np_pin not in installed("frame")
    # report loads a DataFrame made by `frame`, so it needs pandas (and json is stdlib).
    assert pd_pin in installed("report") and np_pin not in installed("report")
    for task in ("nums", "frame", "report"):
        assert "jp==1" in installed(task)
        assert "scikit-learn" not in installed(task)
        assert executor(spec, task)["image"] == "python:3.11"
    # Without a configured base image, pip mode uses plain Python of this version.
    _, package = compiled(nb, packages_mode="pip")
    py = f"python:{sys.version_info.major}.{sys.version_info.minor}"
    assert executor(package.pipeline_spec, "nums")["image"] == py


def test_env_vars_and_kubernetes_secrets():
    nb = make_nb(("a = 1", ["step:one", "env:MODE=fast"]), ("print(a)", ["step:two"]))
    _, package = compiled(
        nb,
        config=KfpConfig(env={"SHARED": "1"}),
        secrets=[SecretEnv(name="s3-creds", env={"AWS_ACCESS_KEY_ID": "access-key"})],
    )
    spec = package.pipeline_spec
    env_one = {e["name"]: e["value"] for e in executor(spec, "one")["env"]}
    assert env_one == {"MODE": "fast", "SHARED": "1"}
    env_two = {e["name"]: e["value"] for e in executor(spec, "two")["env"]}
    assert env_two == {"SHARED": "1"}
    platform = package.platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(platform) == 2
    for config in platform.values():
        assert config["secretAsEnv"][0]["keyToEnv"] == [
            {"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "access-key"}
        ]
        assert config["secretAsEnv"][0]["secretNameParameter"]["runtimeValue"]["constant"] == (
            "s3-creds"
        )
    assert "---" in package.yaml  # the platform spec is the YAML's second document


def test_error_diagnostics_stop_compilation():
    nb = make_nb(("x = 1", ["step:a"]), ("print(yy)", ["step:b"]))
    with pytest.raises(CompileError, match=r"cell 1: .*yy"):
        compiled(nb)


def test_compile_pipeline_returns_the_ir_and_is_deterministic():
    nb = make_nb(("a = 1", ["step:one"]), ("print(a)", ["step:two"]))
    pipeline = analyze(nb, "/somewhere/deep/nb.ipynb")
    first = compile_pipeline(pipeline, nb, config=KfpConfig())
    second = compile_package(pipeline, nb, config=KfpConfig())
    assert first == second.pipeline_spec
    assert first["pipelineInfo"]["name"] == "nb"
    assert "/somewhere/deep" not in second.yaml  # no machine-specific paths
    assert compile_package(pipeline, nb, config=KfpConfig()).yaml == second.yaml
    assert list(yaml.safe_load_all(second.yaml)) == [second.pipeline_spec]


def test_package_dicts_are_the_yaml_documents():
    nb = make_nb(("a = 1", ["step:one"]), ("print(a)", ["step:two"]))
    _, package = compiled(nb, secrets=[SecretEnv(name="s", env={"E": "k"})])
    assert list(yaml.safe_load_all(package.yaml)) == [package.pipeline_spec, package.platform_spec]


# ---------------------------------------------------------------------------- config


def test_config_file_notebook_metadata_and_env(tmp_path, monkeypatch):
    path = tmp_path / "kfp.toml"
    path.write_text(
        'host = "https://kfp.example"\nimage = "reg/default:1"\n[env]\nA = "1"\n'
        '[[secrets]]\nname = "s"\nenv = { TOKEN = "token" }\n'
    )
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "from-env")
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    monkeypatch.delenv("JUPYTER_PIPELINE_IMAGE", raising=False)
    meta = {"jupyter_pipeline": {"kfp": {"env": {"B": "2"}, "packages": "pip"}}}
    config = load_config(meta, path)
    assert config.host == "https://kfp.example"
    assert config.token == "from-env"
    assert config.env == {"A": "1", "B": "2"}
    assert config.packages == "pip"
    assert config.secrets == [SecretEnv(name="s", env={"TOKEN": "token"})]
    with pytest.raises(ConfigError, match="credentials"):
        load_config({"jupyter_pipeline": {"kfp": {"token": "x"}}}, path)
    path.write_text("packages = 'conda'\n")
    with pytest.raises(ConfigError, match="packages"):
        load_config(None, path)


# ---------------------------------------------------------------------------- image command


def test_image_command_pins_exactly_the_notebooks_imports(tmp_path):
    nb = make_nb(
        ("import os, json\nimport numpy as np\nfrom sklearn import linear_model", ["imports"]),
        ("import my_local_helpers\n%matplotlib inline\nx = np.arange(2)", ["step:a"]),
    )
    nb_path = tmp_path / "nb.ipynb"
    nbformat.write(nb, nb_path)
    out = tmp_path / "image"
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter_pipeline.cli", "image", str(nb_path), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [
        line
        for line in (out / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    from jupyter_pipeline import __version__

    assert lines == [
        f"jupyter-pipeline=={__version__}",
        f"numpy=={md.version('numpy')}",
        f"scikit-learn=={md.version('scikit-learn')}",
    ]
    dockerfile = (out / "Dockerfile").read_text()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM python:{py}-slim" in dockerfile
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in dockerfile
    assert "ipykernel install" in dockerfile
    # Custom base and project spec, through the library call.
    write_image_files(nb, str(nb_path), out, base_image="base:1", project_spec="jp @ file:///w")
    assert "FROM base:1" in (out / "Dockerfile").read_text()
    assert (out / "requirements.txt").read_text().splitlines()[1] == "jp @ file:///w"


# ---------------------------------------------------------------------------- CLI


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "jupyter_pipeline.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )


def test_cli_compile_writes_yaml_and_prints_diagnostics(tmp_path):
    nb = make_nb(
        ("import random\nrandom.seed(1)\nx = random.random()", ["step:a"]), ("print(x)", ["step:b"])
    )
    nb_path = tmp_path / "seeded.ipynb"
    nbformat.write(nb, nb_path)
    before = nb_path.read_bytes()
    proc = _cli("compile", str(nb_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "seeded.yaml").exists()
    assert "wrote seeded.yaml (2 steps" in proc.stdout
    assert "[rng-state]" in proc.stderr  # the analysis' diagnostics are shown
    assert nb_path.read_bytes() == before
    out = tmp_path / "sub" / "p.yaml"
    proc = _cli("compile", str(nb_path), "-o", str(out), "--image", "reg/x:1", "--no-html")
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "image: reg/x:1" in text and "system.HTML" not in text


def test_cli_compile_errors_stop_with_exit_2(tmp_path, capsys, monkeypatch):
    from jupyter_pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    nb_path = tmp_path / "bad.ipynb"
    nbformat.write(make_nb(("x = 1", ["step:a"]), ("print(yy)", ["step:b"])), nb_path)
    assert main(["compile", str(nb_path)]) == 2
    err = capsys.readouterr().err
    assert "undefined-name" in err and "Traceback" not in err
    assert not (tmp_path / "bad.yaml").exists()
    assert main(["compile", str(tmp_path / "missing.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err
    good = tmp_path / "good.ipynb"
    nbformat.write(make_nb(("x = 1", ["step:a", "limit:disk:1Gi"])), good)
    assert main(["compile", str(good)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "limit:disk:1Gi" in err


def test_analyze_does_not_import_kfp():
    code = (
        "import sys\nfrom jupyter_pipeline.cli import main\n"
        f"main(['analyze', {str(ROOT / 'tests/data/compile/seeded_alias.ipynb')!r}, '--json'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'kfp' or m.startswith('kfp.'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_cli_compile_env_secret_and_pip_options(tmp_path, capsys, monkeypatch):
    from jupyter_pipeline.cli import main

    monkeypatch.delenv("JUPYTER_PIPELINE_KFP_CONFIG", raising=False)
    monkeypatch.delenv("JUPYTER_PIPELINE_IMAGE", raising=False)
    nb_path = tmp_path / "n.ipynb"
    nbformat.write(make_nb(("import numpy as np\na = np.ones(2)", ["step:one"])), nb_path)
    out = tmp_path / "n.yaml"
    code = main(
        ["compile", str(nb_path), "-o", str(out), "--env", "A=1", "--secret", "db:pw=DB_PASSWORD",
         "--packages", "pip"]
    )  # fmt: skip
    assert code == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    container = next(iter(spec["deploymentSpec"]["executors"].values()))["container"]
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert f"numpy=={md.version('numpy')}" in " ".join(container["command"])
    (k8s,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    assert k8s["secretAsEnv"][0]["keyToEnv"] == [{"envVar": "DB_PASSWORD", "secretKey": "pw"}]
    capsys.readouterr()
    assert main(["compile", str(nb_path), "-o", str(out), "--secret", "nocolon"]) == 2
    assert "SECRET:KEY=ENV" in capsys.readouterr().err
