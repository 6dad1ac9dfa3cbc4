"""``runs``, ``show``, ``logs``, ``cancel``: look at and act on recorded runs.

These read the run store (a run of this or any other process, a sweep for ``show`` and
``cancel``); none of them starts a kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_pipeline.cli import EXIT_OK, UsageError
from jupyter_pipeline.cli.common import _get_run, _open_store, wait_finished
from jupyter_pipeline.cli.common import console as stdout_console
from jupyter_pipeline.cli.run_display import _COLORS, _duration, _error_line
from jupyter_pipeline.model import Run
from jupyter_pipeline.store import RunStore


def _refresh_unwatched(store: RunStore, runs: list[Run]) -> tuple[list[Run], dict[str, str]]:
    """Refresh, once, the unfinished KFP runs nobody watches (else they read running forever).

    Returns the runs as they are now, and run id → why its state is unknown (its KFP host
    could not be asked: such a run is shown ``unknown``, not ``running``).
    """
    if not any(r.backend == "kfp" and not r.state.finished for r in runs):
        return runs, {}
    from jupyter_pipeline.runners.kfp import refresh_unwatched

    unknown = refresh_unwatched(store, runs)
    return [store.get_run(r.id) for r in runs], unknown


def _state(run: Run, unknown: dict[str, str]) -> str:
    if run.id in unknown:
        return "[yellow]unknown[/]"
    return f"[{_COLORS[run.state.value]}]{run.state.value}[/]"


def _as_json(run: Run, unknown: dict[str, str]) -> dict[str, Any]:
    data = run.model_dump(mode="json")
    if run.id in unknown:
        data["state"], data["error"] = "unknown", unknown[run.id]
    return data


def cmd_runs(args: argparse.Namespace) -> int:
    """``jupyter-pipeline runs [--prune --keep N --older-than DAYS]``."""
    if args.prune:
        return _prune(args)
    if args.keep is not None or args.older_than is not None or args.dry_run:
        raise UsageError("--keep, --older-than and --dry-run go with --prune")
    store = _open_store(args)
    runs, unknown = _refresh_unwatched(store, store.list_runs(limit=args.limit))
    if args.json:
        print(json.dumps([_as_json(r, unknown) for r in runs], indent=2))
        return EXIT_OK
    if not runs:
        print(f"no runs in {store.path}")
        return EXIT_OK
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("run", "pipeline", "state", "created", "duration", "steps", "notebook"):
        table.add_column(col)
    for r in runs:
        done = sum(1 for s in r.steps if s.state.value in ("succeeded", "cached"))
        table.add_row(
            r.id,
            r.pipeline + (f" (sweep {r.sweep_id} trial {r.trial})" if r.sweep_id else ""),
            _state(r, unknown),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created)),
            _duration(r),
            f"{done}/{len(r.steps)}",
            r.notebook,
        )
    stdout_console(width=200 if not sys.stdout.isatty() else None).print(table)
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    """``jupyter-pipeline runs --prune``: delete old finished runs and unused cache entries."""
    from jupyter_pipeline.runners.cache import StepCache, default_cache_dir

    if args.keep is None and args.older_than is None:
        raise UsageError("--prune needs --keep N (newest runs to keep) and/or --older-than DAYS")
    store = _open_store(args)
    # A KFP run nobody watched to its end is still "running" in the store: ask KFP first.
    active = [r for r in store.list_runs(limit=1_000_000) if not r.state.finished]
    _, unknown = _refresh_unwatched(store, active)
    try:
        result = store.prune(
            keep=args.keep,
            older_than=args.older_than * 86400 if args.older_than is not None else None,
            dry_run=args.dry_run,
        )
    except ValueError as exc:
        raise UsageError(f"--prune: {exc}") from None
    cache = StepCache(default_cache_dir(store.folder))
    entries = len(result.cache_keys) if args.dry_run else cache.remove(result.cache_keys)
    if args.json:
        print(
            json.dumps(
                {
                    "runs": result.runs,
                    "folders": [str(f) for f in result.folders],
                    "cache_entries": entries,
                    "active": result.active,
                    "unknown": unknown,
                    "dry_run": args.dry_run,
                },
                indent=2,
            )
        )
        return EXIT_OK
    verb = "would delete" if args.dry_run else "deleted"
    n = len(result.runs)
    print(
        f"{verb} {n} run{'s' if n != 1 else ''} ({len(result.folders)} run folders, "
        f"{entries} cache entries)" + (f": {', '.join(result.runs)}" if result.runs else "")
    )
    if result.active:
        print(
            f"left alone {len(result.active)} queued/running: {', '.join(result.active)}"
            + ("; cache entries are kept while a local run is active" if not entries else "")
        )
    for run_id, why in unknown.items():
        print(f"kept {run_id}: {why}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """``jupyter-pipeline show``."""
    store = _open_store(args)
    if args.run.startswith("sw"):  # sweep ids; run ids are hex
        from jupyter_pipeline.cli.sweep import show_sweep

        return show_sweep(store, args.run, args.json)
    run = _get_run(store, args.run)
    (run,), unknown = _refresh_unwatched(store, [run])
    if args.json:
        data = _as_json(run, unknown)
        data["metrics"] = store.get_metrics(run.id)
        print(json.dumps(data, indent=2))
        return EXIT_OK
    from rich.table import Table

    console = stdout_console(width=200 if not sys.stdout.isatty() else None)
    console.print(
        f"run [bold]{run.id}[/]  {run.pipeline}  {_state(run, unknown)}  {_duration(run)}"
    )
    if run.id in unknown:
        console.print(unknown[run.id], highlight=False, markup=False)
    console.print(f"notebook: {run.notebook}", highlight=False)
    if run.parameters:
        params = ", ".join(f"{k}={v!r}" for k, v in run.parameters.items())
        console.print(f"parameters: {params}", highlight=False, markup=False)
    if run.run_dir:
        console.print(f"run dir: {run.run_dir}", highlight=False)
    if run.url:
        console.print(f"url: {run.url}", highlight=False)
    if run.sweep_id:
        console.print(f"trial {run.trial} of sweep {run.sweep_id}", highlight=False)
    if run.error:
        console.print(f"error: {run.error}", highlight=False, markup=False)
    table = Table(box=None, pad_edge=False)
    for col in ("step", "state", "start", "duration", "tries", "executed notebook / error"):
        table.add_column(col)
    t0 = run.started or run.created
    for s in run.steps:
        start = f"+{s.started - t0:.1f}s" if s.started is not None else ""
        detail = s.executed_notebook or ""
        if s.error and s.state.value != "succeeded":
            error = _error_line(s) if s.state.value == "failed" else s.error
            detail = error + (f"\n{detail}" if detail else "")
        table.add_row(
            s.step,
            f"[{_COLORS[s.state.value]}]{s.state.value}[/]",
            start,
            _duration(s) if s.state.value != "cached" else "cached",
            str(s.attempts) if s.attempts else "",
            detail,
        )
    console.print(table)
    metrics = store.get_metrics(run.id)
    for step, values in metrics.items():
        console.print(f"metrics ({step}): " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    """``jupyter-pipeline logs``."""
    store = _open_store(args)
    run = _get_run(store, args.run)
    steps = {s.step: s for s in run.steps}
    if args.step not in steps:
        raise UsageError(f"run {run.id} has no step {args.step!r}; steps: {', '.join(steps)}")
    pos = 0
    while True:
        s = store.get_run(run.id).steps[list(steps).index(args.step)]
        if s.log_path and Path(s.log_path).exists():
            with open(s.log_path, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
        elif not args.follow or s.state.finished:
            print(f"step {args.step} has no log yet (state: {s.state.value})", file=sys.stderr)
            return EXIT_OK
        if not args.follow or s.state.finished:
            return EXIT_OK
        time.sleep(0.3)


def cmd_cancel(args: argparse.Namespace) -> int:
    """``jupyter-pipeline cancel``."""
    from jupyter_pipeline.runners.local import cancel_run

    store = _open_store(args)
    if args.run.startswith("sw"):  # sweep ids; run ids are hex
        from jupyter_pipeline.cli.sweep import cancel_sweep_command

        return cancel_sweep_command(store, args.run)
    run = _get_run(store, args.run)
    if run.backend == "kfp" and not run.state.finished:
        # A KFP run is terminated on the cluster (the runner there is KFP, not a process here).
        from jupyter_pipeline.runners.kfp import KfpError, KfpRunner

        try:
            KfpRunner(store=store).cancel(run.id)
        except KfpError as exc:
            raise UsageError(str(exc)) from None
        print(f"run {run.id} {store.get_run(run.id).state.value}")
        return EXIT_OK
    if not cancel_run(store, run.id):
        print(f"run {run.id} already {run.state.value}")
        return EXIT_OK
    # Wait (briefly) for the runner to record the cancellation.
    run = wait_finished(run, lambda: store.get_run(run.id), 20)
    print(f"run {run.id} {run.state.value}")
    return EXIT_OK
