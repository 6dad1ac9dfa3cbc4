"""Command line: ``jupyter-pipeline analyze | run | compile | submit | …``.

Each subcommand lives in its own module with a ``register(subparsers)`` function; modules
import heavy libraries (papermill, kfp) inside their handlers so ``analyze`` starts fast.
Exit codes: 0 ok, 1 pipeline or step failure, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from jupyter_pipeline import __version__, skip_slow_optional_imports

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input or usage the user can fix; printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    from jupyter_pipeline.cli import analyze, kfp, run, sweep

    parser = argparse.ArgumentParser(
        prog="jupyter-pipeline",
        description="Turn a tagged notebook into a pipeline; run it here or on Kubeflow Pipelines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (analyze, run, sweep, kfp):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jupyter-pipeline``; returns the exit code."""
    skip_slow_optional_imports()
    from jupyter_pipeline.cli.params import join_parameter_words
    from jupyter_pipeline.notebook import NotebookError

    parser = build_parser()
    args = parser.parse_args(join_parameter_words(list(sys.argv[1:] if argv is None else argv)))
    try:
        code = args.handler(args)
    except (NotebookError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`… | head -5`): stop quietly, as `git log | head` does, with
        # the command's own exit code when it had one (a failed run stays a failure).
        _discard_stdout()
        return int(getattr(args, "exit_code", EXIT_OK))
    return int(code or 0)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured): nothing left to flush
        pass


def run_main() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
