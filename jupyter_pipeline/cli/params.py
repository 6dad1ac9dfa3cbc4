"""papermill's parameter flags on the command line: ``-p``, ``-r``, ``-f``, ``-y``.

Shared by ``run``, ``verify``, ``sweep`` and ``submit``: the options, the joining of
papermill's two-word form (``-p NAME VALUE``) before argparse sees it, the parsing of the
values as papermill parses them, and their check against the pipeline's parameters.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_pipeline.cli import UsageError

if TYPE_CHECKING:
    from jupyter_pipeline.model import Pipeline


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


def _resolve_params(pipeline: Pipeline, args: argparse.Namespace) -> dict[str, Any]:
    from jupyter_pipeline.runners.base import ParameterError, resolve_parameters

    overrides = parameters_from_args(args, pipeline)
    try:
        resolve_parameters(pipeline, overrides)
    except ParameterError as exc:
        raise UsageError(f"{args.notebook}: {exc}") from None
    return overrides
