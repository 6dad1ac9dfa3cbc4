"""``run``, ``runs``, ``show``, ``logs``, ``cancel``, ``verify``: local pipeline runs.

This module registers the subcommands and runs ``run`` (and its ``--dry-run`` plan); the
others live beside it: :mod:`.runs` (``runs``, ``show``, ``logs``, ``cancel``),
:mod:`.verify`, :mod:`.params` (papermill's parameter flags), :mod:`.run_display`
(progress and failures on the terminal).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jupyter_pipeline.cli import EXIT_OK, UsageError
from jupyter_pipeline.cli.analyze import add_split_option
from jupyter_pipeline.cli.common import _check_kernel, _open_store, analyze_or_stop, source_language
from jupyter_pipeline.cli.params import (
    _resolve_params,
    add_parameter_options,
    join_parameter_words,
    papermill_value,
    parameters_from_args,
    parse_parameters,
)
from jupyter_pipeline.cli.run_display import (
    _ICONS,
    _duration,
    _exit_code,
    _print_failures,
    _Progress,
)
from jupyter_pipeline.cli.runs import cmd_cancel, cmd_logs, cmd_runs, cmd_show
from jupyter_pipeline.cli.verify import cmd_verify

# Imported from here by the other subcommands (and tests): where they were first defined.
__all__ = [
    "_check_kernel",
    "_exit_code",
    "add_parameter_options",
    "cmd_run",
    "join_parameter_words",
    "papermill_value",
    "parameters_from_args",
    "parse_parameters",
    "register",
    "source_language",
]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the local-run subcommands."""
    store_help = "run store database (default: $JUPYTER_PIPELINE_STORE or the Jupyter data dir)"

    p = sub.add_parser("run", help="run a notebook as a pipeline on this machine")
    p.add_argument("notebook", help="the .ipynb to run (never modified)")
    _run_options(p)
    p.add_argument("-o", "--output", help="write the merged executed notebook here")
    p.add_argument("--html", action="store_true", help="also export each step's notebook to HTML")
    p.add_argument(
        "--no-fork",
        action="store_true",
        help="spawn every step kernel with `python -m ipykernel_launcher` instead of forking "
        "it from a fork server that has already imported ipykernel and the notebook's "
        "libraries (the default wherever a forked kernel behaves like a fresh one)",
    )
    p.add_argument("--json", action="store_true", help="print the finished run as JSON")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run nothing: print, per step, whether a run would reuse its cached results or "
        "run it, and why (code, input, data file or parameter changed, never run)",
    )
    p.add_argument("--store", help=store_help)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser(
        "runs",
        help="list recent runs, or prune old ones",
        description="List recent runs. With --prune, delete old finished runs (records, run "
        "folders, and the cache entries no remaining run uses); queued and running runs are "
        "never deleted.",
    )
    p.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--store", help=store_help)
    p.add_argument("--prune", action="store_true", help="delete old finished runs (see --keep)")
    p.add_argument(
        "--keep", type=int, metavar="N", help="with --prune: keep the N newest finished runs"
    )
    p.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --prune: delete only runs created more than DAYS days ago",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="with --prune: only list what would be deleted"
    )
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("show", help="show one run (steps, states, timings, paths) or a sweep")
    p.add_argument("run", help="run or sweep id (or a unique prefix)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--store", help=store_help)
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("logs", help="print a step's log")
    p.add_argument("run", help="run id (or a unique prefix)")
    p.add_argument("step", help="step name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    p.add_argument("--store", help=store_help)
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser("cancel", help="cancel a running run or sweep (kills its kernels)")
    p.add_argument("run", help="run or sweep id (or a unique prefix)")
    p.add_argument("--store", help=store_help)
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser(
        "verify",
        help="run the notebook straight and as a pipeline; report cells whose output differs",
    )
    p.add_argument("notebook", help="the .ipynb to check (never modified)")
    _run_options(p, cache=False)
    p.add_argument("--stderr", action="store_true", help="also compare stderr (warnings)")
    p.add_argument("--images", action="store_true", help="also compare figures' image data")
    p.add_argument("--keep", metavar="DIR", help="keep both executed notebooks in DIR")
    p.add_argument("--store", help=store_help)
    p.set_defaults(handler=cmd_verify)


def _run_options(p: argparse.ArgumentParser, cache: bool = True) -> None:
    add_parameter_options(p)
    p.add_argument("--max-parallel", type=int, default=None, metavar="N", help="steps at once")
    if cache:
        p.add_argument("--no-cache", action="store_true", help="re-run every step")
    p.add_argument("--no-prewarm", action="store_true", help="start kernels only when needed")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run steps tagged limit:nvidia.com/gpu:N (or limit:gpu:N) on the CPU, with the "
        "GPUs hidden, when this machine has fewer than N (default: refuse the run)",
    )
    add_split_option(p)


def _dry_run(args: argparse.Namespace) -> int:
    """``jupyter-pipeline run --dry-run``: the plan, computed from the step cache."""
    from jupyter_pipeline.notebook import read_notebook
    from jupyter_pipeline.runners.plan import plan_run

    nb = read_notebook(args.notebook)
    pipeline = analyze_or_stop(args, "running", include_info=False, nb=nb)
    overrides = _resolve_params(pipeline, args)
    plan = plan_run(
        pipeline,
        nb,
        args.notebook,
        _open_store(args),
        parameters=overrides,
        cache=not args.no_cache,
    )
    if args.json:
        print(json.dumps([item.model_dump(mode="json") for item in plan], indent=2))
        return EXIT_OK
    width = max((len(item.step) for item in plan), default=0)
    for item in plan:
        icon = _ICONS["cached"] if item.action == "cached" else _ICONS["running"]
        print(f"{icon} {item.step:<{width}}  {item.action:<8}  {item.reason}")
    runs = sum(1 for item in plan if item.action == "will run")
    print(f"{runs} of {len(plan)} steps would run (dry run: nothing was run)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """``jupyter-pipeline run``."""
    if args.dry_run:
        return _dry_run(args)
    pipeline = analyze_or_stop(args, "running", include_info=False)
    overrides = _resolve_params(pipeline, args)
    _check_kernel(pipeline, args.notebook)
    if args.max_parallel is not None and args.max_parallel < 1:
        raise UsageError("--max-parallel must be at least 1")
    if args.output and Path(args.output).absolute() == Path(args.notebook).absolute():
        raise UsageError(f"--output {args.output} is the source notebook; choose another file")
    from jupyter_pipeline.runners.local import LocalRunner

    store = _open_store(args)
    runner = LocalRunner(
        store,
        max_parallel=args.max_parallel,
        cache=not args.no_cache,
        prewarm=not args.no_prewarm,
        fork=not args.no_fork,
        html=args.html,
        allow_cpu=args.allow_cpu,
    )
    from jupyter_pipeline.runners.gpus import GpuUnavailable

    began = time.time()
    try:
        with _Progress(enabled=not args.json) as progress:
            run = runner.run(
                pipeline, args.notebook, parameters=overrides, output=args.output, on_event=progress
            )
    except GpuUnavailable as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        # The runner has written the merged notebook of what ran (as papermill does).
        if (
            args.output
            and Path(args.output).exists()
            and Path(args.output).stat().st_mtime >= began
        ):
            print(f"merged notebook: {args.output}", flush=True)
        raise
    args.exit_code = _exit_code(run)  # what a broken pipe (`| head`) still exits with
    if args.json:
        print(run.model_dump_json(indent=2))
    else:
        cached = sum(1 for s in run.steps if s.state.value == "cached")
        summary = f"run {run.id} {run.state.value} in {_duration(run) or '0.0s'}"
        if cached:
            summary += f" ({cached} of {len(run.steps)} steps cached)"
        stops = {s.error for s in run.steps if s.state.value == "skipped" and s.error}
        stops = {e for e in stops if e.startswith("the notebook stopped")}
        if stops and run.state.value == "succeeded":
            summary += f" ({min(stops)})"
        print(summary)
        if args.output and Path(args.output).exists():
            print(f"merged notebook: {args.output}")
        print(f"details: jupyter-pipeline show {run.id}")
    _print_failures(run, args.notebook)
    return _exit_code(run)
