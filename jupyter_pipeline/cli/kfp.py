"""``compile``, ``submit``, ``image``: Kubeflow Pipelines.

kfp is imported only inside the handlers (through the compiler and the runner), so the
other commands start fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jupyter_pipeline.cli import EXIT_OK, UsageError
from jupyter_pipeline.cli.analyze import add_split_option
from jupyter_pipeline.cli.common import analyze_or_stop
from jupyter_pipeline.cli.params import add_parameter_options


def register(sub: argparse._SubParsersAction) -> None:
    """Add the KFP subcommands."""
    p = sub.add_parser(
        "compile",
        help="compile a notebook to a Kubeflow Pipelines v2 pipeline YAML",
        description="Analyze the notebook and compile it with kfp's compiler: one component "
        "per step running jupyter-pipeline's step runtime. Diagnostics are printed; errors "
        "stop compilation (exit 2).",
    )
    p.add_argument("notebook", help="the .ipynb to compile (never modified)")
    p.add_argument("-o", "--output", help="YAML to write (default: <notebook name>.yaml here)")
    _compile_options(p)
    from jupyter_pipeline.cli.sweep import add_compile_sweep_options

    add_compile_sweep_options(p)
    p.set_defaults(handler=cmd_compile)

    p = sub.add_parser(
        "submit",
        help="compile and submit a notebook to a Kubeflow Pipelines cluster",
        description="Compile the notebook and submit it through kfp.Client; the run is "
        "recorded in the same run store as local runs (see `runs`, `show`, `cancel`).",
    )
    p.add_argument("notebook", help="the .ipynb to submit (never modified)")
    p.add_argument("--host", help="KFP API endpoint (or KF_PIPELINES_ENDPOINT / config)")
    add_parameter_options(p)
    p.add_argument("--experiment", help="experiment name (default: notebook's, else Default)")
    p.add_argument("--run-name", help="run name (default: pipeline name and time)")
    p.add_argument("--namespace", help="Kubernetes namespace (multi-user clusters)")
    p.add_argument("--token", help="bearer token (default: KF_PIPELINES_TOKEN / config)")
    p.add_argument("--cookies", help="cookie header, e.g. authservice_session=… (Dex setups)")
    p.add_argument("--watch", action="store_true", help="follow the run until it ends")
    p.add_argument(
        "--schedule",
        metavar="CRON",
        help="create a recurring run instead (5-field cron, e.g. '0 6 * * *')",
    )
    p.add_argument("--no-cache", action="store_true", help="disable KFP caching for this run")
    p.add_argument("--store", help="run store database (default: the shared one)")
    p.add_argument(
        "--poll", type=float, default=5.0, metavar="SECONDS", help="poll interval for --watch"
    )
    _compile_options(p)
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser(
        "image",
        help="write a Dockerfile and pinned requirements.txt for the notebook's step image",
        description="The image holds the project, kfp and exactly the packages the notebook "
        "imports, pinned to the versions installed here, so KFP pods install nothing.",
    )
    p.add_argument("notebook", help="the .ipynb whose imports to pin")
    p.add_argument("-o", "--output", default=".", metavar="DIR", help="folder to write into")
    p.add_argument("--base-image", help="FROM image (default: python:<this version>-slim)")
    p.add_argument(
        "--project-spec",
        help="requirement line installing jupyter-pipeline (default: jupyter-pipeline==X)",
    )
    p.set_defaults(handler=cmd_image)


def _compile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image",
        help="step image for steps without an image: tag (overrides the notebook's default, "
        "the config and JUPYTER_PIPELINE_IMAGE)",
    )
    add_split_option(p)
    p.add_argument(
        "--packages",
        choices=("image", "pip"),
        help="image: the image holds everything (default); pip: each step pip-installs only "
        "what its imports need",
    )
    p.add_argument("--config", metavar="FILE", help="KFP config file (TOML or JSON)")
    p.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="env var for every step"
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="SECRET:KEY=ENV",
        help="expose key KEY of Kubernetes secret SECRET as env var ENV in every step",
    )
    p.add_argument("--workdir", help="working directory of the steps' kernels in the container")
    p.add_argument("--no-html", action="store_true", help="do not export step notebooks to HTML")


def _parse_env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"--env {item!r}: write NAME=VALUE")
        out[name] = value
    return out


def _parse_secrets(items: list[str]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        secret, colon, rest = item.partition(":")
        key, eq, env = rest.partition("=")
        if not colon or not eq or not secret or not key or not env:
            raise UsageError(f"--secret {item!r}: write SECRET:KEY=ENV, e.g. s3:access-key=AWS_KEY")
        out.setdefault(secret, {})[env] = key
    return [{"name": name, "env": env} for name, env in out.items()]


def _config(args: argparse.Namespace, nb: Any, **overrides: Any) -> Any:
    from jupyter_pipeline.compile import ConfigError, load_config

    try:
        config = load_config(nb.metadata, args.config)
        return config.merged(**overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _compile_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from jupyter_pipeline.compile import SecretEnv

    return {
        "image": args.image,
        "packages_mode": args.packages,
        "env": _parse_env(args.env) or None,
        "secrets": [SecretEnv.model_validate(s) for s in _parse_secrets(args.secret)] or None,
        "html": False if args.no_html else None,
        "workdir": args.workdir,
    }


def cmd_compile(args: argparse.Namespace) -> int:
    """``jupyter-pipeline compile NB [-o pipeline.yaml]``."""
    from jupyter_pipeline.compile import CompileError, write_yaml
    from jupyter_pipeline.notebook import read_notebook

    nb = read_notebook(args.notebook)
    pipeline = analyze_or_stop(args, "compiling", include_info=True, nb=nb)
    config = _config(args, nb)
    if args.sweep or args.katib:
        from jupyter_pipeline.cli.sweep import compile_sweep_command

        return compile_sweep_command(args, nb, pipeline, config, _compile_kwargs(args))
    out = Path(args.output) if args.output else Path(Path(args.notebook).stem + ".yaml")
    try:
        package = write_yaml(pipeline, nb, out, config=config, **_compile_kwargs(args))
    except CompileError as exc:
        raise UsageError(str(exc)) from None
    steps = len(package.components)
    print(f"wrote {out} ({steps} step{'s' if steps != 1 else ''}, pipeline {pipeline.name})")
    return EXIT_OK


def cmd_image(args: argparse.Namespace) -> int:
    """``jupyter-pipeline image NB [-o DIR]``."""
    from jupyter_pipeline.compile.packages import write_image_files
    from jupyter_pipeline.notebook import read_notebook

    nb = read_notebook(args.notebook)
    files = write_image_files(
        nb,
        args.notebook,
        args.output,
        base_image=args.base_image,
        project_spec=args.project_spec,
    )
    dockerfile, requirements = files.dockerfile, files.requirements
    count = sum(
        1 for line in requirements.read_text().splitlines() if line and not line.startswith("#")
    )
    print(f"wrote {dockerfile} and {requirements} ({count} requirements)")
    if files.unpinned:
        print(
            f"note: {', '.join(files.unpinned)} "
            f"{'is' if len(files.unpinned) == 1 else 'are'} not installed here: listed "
            "unpinned; pin the versions the notebook was written with",
            file=sys.stderr,
        )
    if files.unresolved:
        print(
            f"warning: {args.notebook} imports {', '.join(files.unresolved)}, not installed "
            f"here and of unknown distribution: nothing listed; add the package(s) to "
            f"{requirements}",
            file=sys.stderr,
        )
    print(f"build it: docker build -t <registry>/<name>:<tag> {dockerfile.parent}")
    return EXIT_OK


def _step_line(record: Any) -> str:
    extra = f" — {record.error}" if record.error else ""
    return f"  {record.step}: {record.state.value}{extra}"


def cmd_submit(args: argparse.Namespace) -> int:
    """``jupyter-pipeline submit NB --host URL …``."""
    from jupyter_pipeline.cli.params import parameters_from_args
    from jupyter_pipeline.cli.run_display import _exit_code
    from jupyter_pipeline.compile import CompileError
    from jupyter_pipeline.notebook import read_notebook
    from jupyter_pipeline.runners.base import ParameterError
    from jupyter_pipeline.runners.kfp import KfpError, KfpRunner

    nb = read_notebook(args.notebook)
    pipeline = analyze_or_stop(args, "submitting", include_info=True, nb=nb)
    overrides = parameters_from_args(args, pipeline)
    config = _config(
        args,
        nb,
        host=args.host,
        namespace=args.namespace,
        token=args.token,
        cookies=args.cookies,
    )
    store = None
    if args.store:
        from jupyter_pipeline.store import RunStore

        store = RunStore(args.store)
    runner = KfpRunner(config=config, store=store, poll_interval=args.poll)
    kwargs = _compile_kwargs(args)
    try:
        if args.schedule:
            rec = runner.schedule(
                pipeline,
                args.notebook,
                args.schedule,
                overrides,
                name=args.run_name,
                experiment=args.experiment,
                source_nb=nb,
                **kwargs,
            )
            print(f"scheduled recurring run {rec['id']} (cron {rec['cron']}): {rec['url']}")
            return EXIT_OK
        run = runner.submit(
            pipeline,
            args.notebook,
            overrides,
            run_name=args.run_name,
            experiment=args.experiment,
            enable_caching=False if args.no_cache else None,
            source_nb=nb,
            **kwargs,
        )
        print(f"submitted run {run.id} (KFP run {run.external_id}): {run.url}")
        if not args.watch:
            return EXIT_OK

        def on_event(event: Any) -> None:
            if event.kind == "step" and event.step:
                record = next(s for s in event.run.steps if s.step == event.step)
                # every step starts queued; say what moves
                if record.state.value != "queued" or record.error:
                    print(_step_line(record), flush=True)

        run = runner.watch(run.id, on_event)
    except (KfpError, ParameterError, CompileError) as exc:
        raise UsageError(str(exc)) from None
    print(f"run {run.id} {run.state.value}" + (f": {run.error}" if run.error else ""))
    return _exit_code(run)
