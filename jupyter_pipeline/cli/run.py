"""``run``, ``runs``, ``show``, ``logs``, ``cancel``, ``verify``: local pipeline runs."""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_pipeline.cli import EXIT_FAILURE, EXIT_OK, UsageError
from jupyter_pipeline.cli.analyze import add_split_option
from jupyter_pipeline.cli.common import analyze_or_stop, wait_finished
from jupyter_pipeline.cli.common import console as stdout_console

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from jupyter_pipeline.model import Pipeline, Run, StepRun
    from jupyter_pipeline.store import RunStore

_ICONS = {
    "queued": "·",
    "running": "▶",
    "succeeded": "✓",
    "cached": "✓",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "■",
}
_COLORS = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "cached": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "magenta",
}


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


def add_parameter_options(p: argparse.ArgumentParser) -> None:
    """papermill's parameter flags: ``-p NAME VALUE`` (or ``NAME=VALUE``), ``-r``, ``-f``, ``-y``.

    Two-word forms are joined into ``NAME=VALUE`` before argparse sees them
    (:func:`join_parameter_words`).
    """
    p.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME VALUE",
        help="override a parameter (also NAME=VALUE); as papermill's -p: True/False/None, an "
        "int or a float, else text — and always the text as it is for a parameter whose "
        "default is a string",
    )
    p.add_argument(
        "-r",
        "--parameter-raw",
        action="append",
        default=[],
        metavar="NAME VALUE",
        help="override a parameter with VALUE as a string, never converted",
    )
    p.add_argument(
        "-f",
        "--parameters-file",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML file of parameter overrides",
    )
    p.add_argument(
        "-y",
        "--parameters-yaml",
        action="append",
        default=[],
        metavar="YAML",
        help="YAML string of parameter overrides, e.g. -y 'lr: 0.1'",
    )


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


# ---------------------------------------------------------------------------- helpers


_PARAMETER_FLAGS = ("-p", "--parameter", "-r", "--parameter-raw")


def join_parameter_words(argv: list[str]) -> list[str]:
    """Turn papermill's two-word ``-p NAME VALUE`` / ``-r NAME VALUE`` into ``NAME=VALUE``.

    A word after the flag that has no ``=`` is a NAME, and the word after it its VALUE (which
    may itself contain ``=``), unless that word is an option (``-o``, ``--store``; a negative
    number is a value). Other arguments pass unchanged.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        out.append(word)
        if (
            word in _PARAMETER_FLAGS
            and i + 2 < len(argv)
            and "=" not in argv[i + 1]
            and argv[i + 1].isidentifier()
            and not (argv[i + 2].startswith("-") and not _is_number(argv[i + 2]))
        ):
            out.append(f"{argv[i + 1]}={argv[i + 2]}")
            i += 3
            continue
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def papermill_value(text: str) -> Any:
    """A ``-p`` value as papermill's CLI reads it (``papermill.cli._resolve_type``)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parameters_from_args(args: argparse.Namespace, pipeline: Pipeline) -> dict[str, Any]:
    """The overrides of ``-p``/``-r``/``-f``/``-y`` (see :func:`add_parameter_options`)."""
    return parse_parameters(
        args.parameter,
        pipeline,
        raw=args.parameter_raw,
        files=args.parameters_file,
        yamls=args.parameters_yaml,
    )


def _split_item(flag: str, item: str) -> tuple[str, str]:
    name, eq, raw = item.partition("=")
    name = name.strip()
    if not eq or not name.isidentifier():
        raise UsageError(
            f"{flag} {item!r}: write {flag} NAME VALUE (or NAME=VALUE), e.g. {flag} lr 0.1"
        )
    return name, raw


def _yaml_parameters(text: str, where: str) -> dict[str, Any]:
    import yaml
    from papermill.iorw import NoDatesSafeLoader

    try:
        loaded = yaml.load(text, Loader=NoDatesSafeLoader) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not valid YAML ({exc})") from None
    if not isinstance(loaded, dict):
        raise UsageError(f"{where}: expected a YAML mapping of NAME: VALUE")
    return dict(loaded)


def parse_parameters(
    items: list[str],
    pipeline: Pipeline | None = None,
    *,
    raw: list[str] | None = None,
    files: list[str] | None = None,
    yamls: list[str] | None = None,
) -> dict[str, Any]:
    """The overrides given on the command line, read as papermill reads them.

    papermill's order: ``-f`` files, then ``-y`` strings, then ``-p``, then ``-r`` (later
    ones win). A ``-p`` value for a parameter whose default is a string is that text as it
    is; otherwise papermill's rule (True/False/None, int, float, else text), and for a
    list or dict parameter a Python literal. Types are checked later, against the
    parameters' defaults.
    """
    from jupyter_pipeline.model import ParameterType

    types = {p.name: p.type for p in pipeline.parameters} if pipeline is not None else {}
    out: dict[str, Any] = {}
    for path in files or []:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"-f {path}: cannot read it ({exc.strerror or exc})") from None
        out.update(_yaml_parameters(text, f"-f {path}"))
    for text in yamls or []:
        out.update(_yaml_parameters(text, f"-y {text!r}"))
    for item in items:
        name, text = _split_item("-p", item)
        kind = types.get(name)
        if kind is ParameterType.str:
            out[name] = text
            continue
        value = papermill_value(text)
        if isinstance(value, str) and (
            kind in (ParameterType.list, ParameterType.dict) or pipeline is None
        ):
            with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
                value = ast.literal_eval(text)
        out[name] = value
    for item in raw or []:
        name, text = _split_item("-r", item)
        out[name] = text
    return out


def source_language(nb: NotebookNode) -> str:
    """The notebook's language (papermill needs one; Python when the notebook omits it)."""
    meta = nb.metadata
    return meta.get("language_info", {}).get("name") or meta.get("kernelspec", {}).get(
        "language", "python"
    )


def _open_store(args: argparse.Namespace) -> RunStore:
    from jupyter_pipeline.store import RunStore

    return RunStore(args.store)


def _get_run(store: RunStore, run_id: str) -> Run:
    try:
        return store.get_run(run_id)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None


def _duration(s: StepRun | Run) -> str:
    if s.started is None:
        return ""
    end = s.finished or time.time()
    return f"{end - s.started:.1f}s"


def _check_kernel(pipeline: Pipeline, notebook: str) -> None:
    """Stop early (exit 2) if the notebook's kernel is not installed here.

    The name is resolved as jupyter_client (and so papermill) resolves it when it starts
    the kernel: case-insensitively, and ``python`` means the native kernel (``python3``).
    """
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    name = pipeline.kernel_name
    if name == "python":  # jupyter_client's KernelManager maps it so
        name = NATIVE_KERNEL_NAME
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        specs = manager.find_kernel_specs()
        raise UsageError(
            f"{notebook}: its kernel {pipeline.kernel_name!r} is not installed here "
            f"(installed: {', '.join(sorted(specs)) or 'none'}); install it or change the "
            "notebook's kernel"
        ) from None


def _resolve_params(pipeline: Pipeline, args: argparse.Namespace) -> dict[str, Any]:
    from jupyter_pipeline.runners.base import ParameterError, resolve_parameters

    overrides = parameters_from_args(args, pipeline)
    try:
        resolve_parameters(pipeline, overrides)
    except ParameterError as exc:
        raise UsageError(f"{args.notebook}: {exc}") from None
    return overrides


# ---------------------------------------------------------------------------- progress


class _Progress:
    """One line per step: rich live table on a terminal, plain transition lines otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.run: Run | None = None
        self.seen: dict[str, str] = {}
        self.warming: set[str] = set()
        self.live: Any = None

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(
                self, console=Console(), refresh_per_second=4, transient=False
            ).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(None, None, None)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        if self.run is None:
            return table
        for s in self.run.steps:
            state = s.state.value
            label = state
            if state == "queued" and s.step in self.warming:
                label = "warming"
            note = s.error or "" if state in ("failed", "skipped") else ""
            if state == "running" and s.attempts > 1:
                note = f"attempt {s.attempts}"
            table.add_row(
                f"[{_COLORS[state]}]{_ICONS[state]}[/]",
                s.step,
                f"[{_COLORS[state]}]{label}[/]",
                _duration(s) if state != "cached" else "",
                f"[dim]{note}[/]",
            )
        return table

    def __call__(self, event: Any) -> None:
        self.run = event.run
        if event.kind == "warming" and event.step:
            self.warming.add(event.step)
        if not self.enabled or self.tty:
            return
        for s in event.run.steps:
            state = s.state.value
            if self.seen.get(s.step) == state or state == "queued":
                continue
            self.seen[s.step] = state
            extra = f" {_duration(s)}" if state not in ("running", "skipped", "cached") else ""
            if state == "running" and s.attempts > 1:
                extra = f" (attempt {s.attempts})"
            if state in ("failed", "skipped", "cancelled") and s.error:
                extra += f": {s.error}"
            print(f"{_ICONS[state]} {s.step}: {state}{extra}", flush=True)


def _print_failures(run: Run, notebook: str | Path) -> None:
    if not any(s.state.value == "failed" for s in run.steps):
        return  # nothing to show: don't read and parse the notebook for it
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:
        nb = None
    for s in run.steps:
        if s.state.value != "failed":
            continue
        print(f"\n{_error_line(s)}", file=sys.stderr)
        if nb is not None and s.error_cell is not None and s.error_cell < len(nb.cells):
            src = nb.cells[s.error_cell].source.splitlines()
            shown = src[:15] + ([f"... ({len(src) - 15} more lines)"] if len(src) > 15 else [])
            for line in shown:
                print(f"    | {line}", file=sys.stderr)
        if s.executed_notebook:
            print(f"  executed notebook: {s.executed_notebook}", file=sys.stderr)
        if s.log_path:
            print(f"  log: {s.log_path}", file=sys.stderr)


def _error_line(s: StepRun) -> str:
    """``step NAME failed in cell N: error`` (the runtime's messages already read so)."""
    error = s.error or "failed"
    if error.startswith(f"step {s.step}"):
        return error
    where = f" in cell {s.error_cell}" if s.error_cell is not None else ""
    return f"step {s.step} failed{where}: {error}"


def _exit_code(run: Run) -> int:
    return EXIT_OK if run.state.value == "succeeded" else EXIT_FAILURE


# ---------------------------------------------------------------------------- commands


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


def cmd_runs(args: argparse.Namespace) -> int:
    """``jupyter-pipeline runs [--prune --keep N --older-than DAYS]``."""
    if args.prune:
        return _prune(args)
    if args.keep is not None or args.older_than is not None or args.dry_run:
        raise UsageError("--keep, --older-than and --dry-run go with --prune")
    store = _open_store(args)
    runs = store.list_runs(limit=args.limit)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
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
            f"[{_COLORS[r.state.value]}]{r.state.value}[/]",
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
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    """``jupyter-pipeline show``."""
    store = _open_store(args)
    if args.run.startswith("sw"):  # sweep ids; run ids are hex
        from jupyter_pipeline.cli.sweep import show_sweep

        return show_sweep(store, args.run, args.json)
    run = _get_run(store, args.run)
    if args.json:
        data = run.model_dump(mode="json")
        data["metrics"] = store.get_metrics(run.id)
        print(json.dumps(data, indent=2))
        return EXIT_OK
    from rich.table import Table

    console = stdout_console(width=200 if not sys.stdout.isatty() else None)
    console.print(
        f"run [bold]{run.id}[/]  {run.pipeline}  [{_COLORS[run.state.value]}]"
        f"{run.state.value}[/]  {_duration(run)}"
    )
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


def cmd_verify(args: argparse.Namespace) -> int:
    """``jupyter-pipeline verify``: straight papermill run vs pipeline, cell by cell."""
    import tempfile

    import nbformat
    import papermill

    from jupyter_pipeline.runners.local import LocalRunner
    from jupyter_pipeline.runners.verify import compare_notebooks, inject_parameters
    from jupyter_pipeline.runtime.quiet import QuietKernelManager

    pipeline = analyze_or_stop(args, "verifying", include_info=False)
    overrides = _resolve_params(pipeline, args)
    _check_kernel(pipeline, args.notebook)
    nb_path = Path(args.notebook).absolute()
    with tempfile.TemporaryDirectory(prefix="jp-verify-") as tmp:
        out_dir = Path(args.keep) if args.keep else Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        copy = Path(tmp) / f"source-{nb_path.name}"
        source = nbformat.read(str(nb_path), as_version=4)
        language = source_language(source)
        # The overrides go in where the pipeline applies them, also after Kale's
        # pipeline-parameters cells, which papermill would not inject after.
        nbformat.write(
            inject_parameters(
                source,
                pipeline.parameters,
                overrides,
                kernel_name=pipeline.kernel_name,
                language=language,
            ),
            str(copy),
        )
        straight = out_dir / "straight.ipynb"
        merged = out_dir / "pipeline.ipynb"
        print(f"running {args.notebook} straight through with papermill…", flush=True)
        straight_failed = False
        try:
            papermill.execute_notebook(
                str(copy),
                str(straight),
                cwd=str(nb_path.parent),
                kernel_name=pipeline.kernel_name,
                # papermill insists on a language; a notebook saved without one is Python
                language=language,
                progress_bar=False,
                # no kernel start-up warnings, no interrupt before shutdown
                kernel_manager_class=QuietKernelManager,
            )
        except papermill.PapermillExecutionError as exc:
            straight_failed = True
            print(f"the straight run fails at cell {exc.cell_index}: {exc.ename}: {exc.evalue}")
        print("running it as a pipeline…", flush=True)
        runner = LocalRunner(
            _open_store(args),
            max_parallel=args.max_parallel,
            cache=False,
            prewarm=not args.no_prewarm,
            allow_cpu=args.allow_cpu,
        )
        from jupyter_pipeline.runners.gpus import GpuUnavailable

        with _Progress(enabled=True) as progress:
            try:
                run = runner.run(
                    pipeline, nb_path, parameters=overrides, output=merged, on_event=progress
                )
            except GpuUnavailable as exc:
                raise UsageError(str(exc)) from None
        diffs = compare_notebooks(
            nbformat.read(str(straight), as_version=4),
            nbformat.read(str(merged), as_version=4),
            source,
            stderr=args.stderr,
            images=args.images,
        )
        step_of = {c: s.name for s in pipeline.steps for c in s.cells}
        n_code = sum(1 for c in source.cells if c.cell_type == "code")
        for d in diffs:
            print(f"\ncell {d.cell} (step {step_of.get(d.cell, '?')}) differs:")
            print(d.diff())
        if args.keep:
            print(f"\nexecuted notebooks: {straight}, {merged}")
        if run.state.value != "succeeded" and not straight_failed:
            _print_failures(run, nb_path)
        if diffs:
            print(f"\n{len(diffs)} of {n_code} code cells differ (run {run.id})")
            return EXIT_FAILURE
        print(f"\nall {n_code} code cells give the same output (run {run.id})")
        return EXIT_OK
