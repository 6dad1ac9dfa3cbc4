"""``sweep`` and ``sweeps``: parameter sweeps on this machine; ``show``/``cancel`` of a sweep."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_pipeline.cli import EXIT_FAILURE, EXIT_OK, UsageError
from jupyter_pipeline.cli.analyze import add_split_option
from jupyter_pipeline.cli.common import analyze_or_stop, wait_finished

if TYPE_CHECKING:
    from jupyter_pipeline.model import Sweep
    from jupyter_pipeline.store import RunStore

_STORE_HELP = "run store database (default: $JUPYTER_PIPELINE_STORE or the Jupyter data dir)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``sweeps``."""
    p = sub.add_parser(
        "sweep",
        help="run a notebook once per parameter set, sharing the steps that do not change",
        description="Run the pipeline for every combination of the -g values (or --random N "
        "of them). Steps that read no swept parameter run once and feed every trial; the "
        "rest runs once per trial, up to --max-parallel trials at once. Each trial is a run "
        "of the store (see `runs`, `show`, `logs`, `cancel`); `show SWEEP` prints the table.",
    )
    p.add_argument("notebook", help="the .ipynb to sweep (never modified)")
    _plan_options(p, required=True)
    p.add_argument("--max-parallel", type=int, metavar="N", help="trials at once (default: CPUs)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the finished sweep as JSON")
    out.add_argument("--csv", metavar="FILE", help="also write the trials table as CSV")
    p.add_argument("--no-cache", action="store_true", help="reuse nothing from earlier runs")
    p.add_argument("--no-prewarm", action="store_true", help="start kernels only when needed")
    p.add_argument("--no-fork", action="store_true", help="spawn kernels instead of forking")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run GPU steps on the CPU when this machine has too few GPUs (as for run)",
    )
    add_split_option(p)
    p.add_argument("--store", help=_STORE_HELP)
    p.set_defaults(handler=cmd_sweep)

    p = sub.add_parser(
        "run-compiled",
        help="run a compiled pipeline YAML here with kfp.local (what a Katib trial runs)",
        description="Run a pipeline YAML written by `compile` with kfp.local in this "
        "environment (every task a subprocess running the step runtime) and print its "
        "metrics as NAME=VALUE lines (Katib's StdOut metrics collector reads them).",
    )
    p.add_argument("pipeline", help="the compiled pipeline YAML")
    p.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="pipeline input value (repeatable)",
    )
    p.add_argument("--root", metavar="DIR", help="keep the tasks' outputs in DIR")
    p.add_argument(
        "--print-metrics", action="store_true", help="print the metrics as NAME=VALUE lines"
    )
    p.set_defaults(handler=cmd_run_compiled)

    p = sub.add_parser("sweeps", help="list recent sweeps")
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--store", help=_STORE_HELP)
    p.set_defaults(handler=cmd_sweeps)


def _plan_options(p: argparse.ArgumentParser, required: bool) -> None:
    """The options that say what to sweep (``sweep`` and ``compile --sweep/--katib``)."""
    p.add_argument(
        "-g",
        "--grid",
        action="append",
        default=[],
        required=required,
        metavar="NAME=V1,V2,...",
        help="values of one parameter to try (repeatable; values parse like -p)",
    )
    if required:  # compile has no -p of its own: the sweep's fixed values
        p.add_argument(
            "-p",
            "--parameter",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="fix a parameter that is not swept",
        )
    p.add_argument("--random", type=int, metavar="N", help="run N trials drawn from the grid")
    p.add_argument("--seed", type=int, help="seed of --random's draw")
    p.add_argument("--metric", help="metric that ranks trials (default: the first metric)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--maximize", action="store_true", help="larger is better (default)")
    goal.add_argument("--minimize", action="store_true", help="smaller is better")


def add_compile_sweep_options(p: argparse.ArgumentParser) -> None:
    """``compile``'s sweep options: ``--sweep``, ``--katib FILE`` and what to sweep."""
    p.add_argument(
        "--sweep",
        action="store_true",
        help="compile a sweep: the steps that read no swept parameter once, then a "
        "ParallelFor over the trials around the rest",
    )
    p.add_argument(
        "--katib",
        metavar="FILE",
        help="also write a Katib Experiment (kubeflow.org/v1beta1) sweeping the pipeline, "
        "with a ConfigMap holding it, to FILE",
    )
    p.add_argument(
        "--parallelism", type=int, metavar="N", help="trials at once on the cluster (default: all)"
    )
    p.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --sweep/--katib: fix a parameter that is not swept",
    )
    p.add_argument("--namespace", help="with --katib: namespace of the Experiment")
    _plan_options(p, required=False)


def _plan(args: argparse.Namespace, pipeline: Any) -> Any:
    """The sweep plan of the command line (exit 2 on bad values)."""
    from jupyter_pipeline.cli.params import parse_parameters
    from jupyter_pipeline.runners.base import ParameterError
    from jupyter_pipeline.runners.sweep import parse_grid, plan_sweep

    if args.seed is not None and args.random is None:
        raise UsageError("--seed goes with --random N")
    try:
        return plan_sweep(
            pipeline,
            parse_grid(args.grid),
            parse_parameters(args.parameter),
            sample=args.random,
            seed=args.seed,
        )
    except ParameterError as exc:
        raise UsageError(f"{args.notebook}: {exc}") from None


def _trials(plan: Any) -> str:
    n = len(plan.trials)
    return f"{n} trial{'s' if n != 1 else ''}"


def _metric(args: argparse.Namespace, pipeline: Any) -> str | None:
    metrics = [m.name for m in pipeline.metrics]
    if args.metric is not None and args.metric not in metrics:
        known = ", ".join(metrics) or "none (the notebook has no pipeline-metrics cell)"
        raise UsageError(f"{args.notebook}: --metric {args.metric}: known metrics: {known}")
    return args.metric or (metrics[0] if metrics else None)


def compile_sweep_command(
    args: argparse.Namespace, nb: Any, pipeline: Any, config: Any, options: dict[str, Any]
) -> int:
    """``compile NB --sweep -g …`` and/or ``--katib FILE``."""
    import yaml

    from jupyter_pipeline.compile import CompileError, compile_package
    from jupyter_pipeline.compile.katib import katib_documents
    from jupyter_pipeline.compile.sweep import compile_sweep_package

    if not args.grid:
        raise UsageError("--sweep and --katib need what to sweep: -g NAME=V1,V2,...")
    if args.parallelism is not None and args.parallelism < 1:
        raise UsageError("--parallelism must be at least 1")
    plan = _plan(args, pipeline)
    metric = _metric(args, pipeline)
    stem = Path(args.notebook).stem
    try:
        if args.sweep:
            out = Path(args.output) if args.output else Path(f"{stem}.sweep.yaml")
            package = compile_sweep_package(
                pipeline, nb, plan, parallelism=args.parallelism, config=config, **options
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(package.yaml, encoding="utf-8")
            shared = ", ".join(plan.shared) or "no step"
            print(
                f"wrote {out} (pipeline {pipeline.name}-sweep: {shared} once, then a "
                f"ParallelFor over {_trials(plan)} of {', '.join(plan.dependent)})"
            )
        if args.katib:
            if metric is None:
                raise UsageError(
                    f"{args.notebook}: --katib needs an objective, and the notebook has no "
                    "pipeline-metrics cell; add one (print(accuracy)) to sweep it with Katib"
                )
            plain = compile_package(pipeline, nb, config=config, **options)
            image = next(iter(plain.components.values())).image
            docs = katib_documents(
                pipeline,
                plan,
                plain.yaml,
                image=options.get("image") or image,
                metric=metric,
                maximize=not args.minimize,
                parallelism=args.parallelism,
                sample=args.random,
                seed=args.seed,
                namespace=args.namespace,
            )
            katib = Path(args.katib)
            katib.parent.mkdir(parents=True, exist_ok=True)
            katib.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
            print(
                f"wrote {katib} (Katib Experiment {docs[1]['metadata']['name']}: "
                f"{docs[1]['spec']['algorithm']['algorithmName']} over "
                f"{', '.join(plan.axes)}, objective {metric}; apply with kubectl apply -f)"
            )
    except CompileError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_run_compiled(args: argparse.Namespace) -> int:
    """``jupyter-pipeline run-compiled PIPELINE.yaml -p …``."""
    from jupyter_pipeline.cli.params import parse_parameters
    from jupyter_pipeline.compile.katib import run_compiled

    path = Path(args.pipeline)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give a YAML written by `compile`")
    try:
        metrics = run_compiled(path, parse_parameters(args.parameter), root=args.root)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except RuntimeError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.print_metrics:
        # sys.stdout, not print: kfp.local may leave builtins.print indenting its output.
        for name, value in metrics.items():
            sys.stdout.write(f"{name}={value}\n")
        sys.stdout.flush()
    return EXIT_OK


def _open_store(args: argparse.Namespace) -> RunStore:
    from jupyter_pipeline.store import RunStore

    return RunStore(args.store)


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def cmd_sweep(args: argparse.Namespace) -> int:
    """``jupyter-pipeline sweep NB -g NAME=V1,V2 …``."""
    from jupyter_pipeline.cli.common import _check_kernel
    from jupyter_pipeline.runners.sweep import SweepRunner

    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    pipeline = analyze_or_stop(args, "sweeping", include_info=False)
    plan = _plan(args, pipeline)
    metric = _metric(args, pipeline)
    _check_kernel(pipeline, args.notebook)
    runner = SweepRunner(
        _open_store(args),
        max_parallel=args.max_parallel,
        cache=not args.no_cache,
        prewarm=not args.no_prewarm,
        fork=not args.no_fork,
        allow_cpu=args.allow_cpu,
    )
    quiet = args.json
    if not quiet:
        shared = ", ".join(plan.shared) or "none"
        print(
            f"{_trials(plan)} of {pipeline.name}; run once for all: {shared}; "
            f"per trial: {', '.join(plan.dependent)}",
            flush=True,
        )
    from jupyter_pipeline.runners.gpus import GpuUnavailable

    progress = _TrialProgress(plan.trials, enabled=not quiet)
    try:
        sweep = runner.run(
            pipeline,
            args.notebook,
            plan,
            metric=metric,
            maximize=not args.minimize,
            on_event=progress,
            on_start=lambda s: None if quiet else print(f"sweep {s.id}", flush=True),
        )
    except GpuUnavailable as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(sweep.model_dump_json(indent=2))
    else:
        print_sweep(sweep)
    if args.csv:
        write_csv(sweep, Path(args.csv))
        if not quiet:
            print(f"trials table: {args.csv}")
    return EXIT_OK if sweep.state.value == "succeeded" else EXIT_FAILURE


class _TrialProgress:
    """One line per trial state change (trials run in threads: one lock-free print each)."""

    def __init__(self, trials: list[dict[str, Any]], enabled: bool):
        self.trials = trials
        self.enabled = enabled
        self.seen: dict[int, str] = {}

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        run = event.event.run
        state = run.state.value
        if self.seen.get(event.trial) == state or state == "queued":
            return
        self.seen[event.trial] = state
        extra = f": {run.error}" if run.error and state != "succeeded" else ""
        print(
            f"trial {event.trial} ({_values(self.trials[event.trial])}) run {run.id}: "
            f"{state}{extra}",
            flush=True,
        )


def _metric_names(sweep: Sweep) -> list[str]:
    names: list[str] = []
    for t in sweep.trials:
        names += [k for k in t.metrics if k not in names]
    return names


def print_sweep(sweep: Sweep) -> None:
    """The trials as a table: parameters, state, metrics; the best trial marked ``*``."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200 if not sys.stdout.isatty() else None)
    duration = f"{(sweep.finished or time.time()) - sweep.created:.1f}s"
    console.print(
        f"sweep [bold]{sweep.id}[/]  {sweep.pipeline}  {sweep.state.value}  {duration}",
        highlight=False,
    )
    console.print(f"notebook: {sweep.notebook}", highlight=False, markup=False)
    if sweep.parameters:
        console.print(f"fixed: {_values(sweep.parameters)}", highlight=False, markup=False)
    console.print(f"run once for all trials: {', '.join(sweep.shared_steps) or 'none'}")
    if sweep.error:
        console.print(f"error: {sweep.error}", highlight=False, markup=False)
    names = _metric_names(sweep)
    table = Table(box=None, pad_edge=False)
    for col in ["", "trial", "run", "state", *sweep.axes, *names]:
        table.add_column(col, justify="right" if col in names else "left")
    for t in sweep.trials:
        table.add_row(
            "*" if t.index == sweep.best else "",
            str(t.index),
            t.run_id or "",
            t.state.value,
            *(repr(t.parameters.get(a)) for a in sweep.axes),
            *(str(t.metrics.get(n, "")) for n in names),
            style="bold" if t.index == sweep.best else None,
        )
    console.print(table)
    if sweep.best is not None and sweep.metric:
        goal = "largest" if sweep.maximize else "smallest"
        best = sweep.trials[sweep.best]
        console.print(
            f"best (* {goal} {sweep.metric}): trial {best.index}, run {best.run_id}: "
            f"{_values(best.parameters)}",
            highlight=False,
            markup=False,
        )


def _cell(value: Any) -> str:
    # Strings as they are; other values as JSON, so lists and booleans read back unambiguously.
    return value if isinstance(value, str) else json.dumps(value)


def write_csv(sweep: Sweep, path: Path) -> None:
    """The trials table as CSV: trial, run, state, best, each axis, each metric."""
    names = _metric_names(sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["trial", "run", "state", "best", *sweep.axes, *names])
        for t in sweep.trials:
            w.writerow(
                [
                    t.index,
                    t.run_id or "",
                    t.state.value,
                    int(t.index == sweep.best),
                    *(_cell(t.parameters.get(a)) for a in sweep.axes),
                    *(t.metrics.get(n, "") for n in names),
                ]
            )


def _get_sweep(store: RunStore, ident: str) -> Sweep:
    try:
        return store.get_sweep(ident)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None


def show_sweep(store: RunStore, ident: str, as_json: bool) -> int:
    """``jupyter-pipeline show SWEEP``."""
    sweep = _get_sweep(store, ident)
    if as_json:
        print(sweep.model_dump_json(indent=2))
    else:
        print_sweep(sweep)
    return EXIT_OK


def cancel_sweep_command(store: RunStore, ident: str) -> int:
    """``jupyter-pipeline cancel SWEEP``: stop every trial; wait until it is recorded."""
    from jupyter_pipeline.runners.sweep import cancel_sweep

    sweep = _get_sweep(store, ident)
    if not cancel_sweep(store, sweep.id):
        print(f"sweep {sweep.id} already {sweep.state.value}")
        return EXIT_OK
    sweep = wait_finished(sweep, lambda: store.get_sweep(sweep.id), 30)
    print(f"sweep {sweep.id} {sweep.state.value}")
    return EXIT_OK


def cmd_sweeps(args: argparse.Namespace) -> int:
    """``jupyter-pipeline sweeps``."""
    store = _open_store(args)
    sweeps = list(store.list_sweeps(limit=args.limit))
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in sweeps], indent=2))
        return EXIT_OK
    if not sweeps:
        print(f"no sweeps in {store.path}")
        return EXIT_OK
    for s in sweeps:
        done = sum(1 for t in s.trials if t.state.value == "succeeded")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created))
        axes = ", ".join(f"{k}: {len(v)} values" for k, v in s.axes.items())
        print(f"{s.id}  {s.pipeline}  {s.state.value}  {when}  {done}/{len(s.trials)}  {axes}")
    return EXIT_OK
