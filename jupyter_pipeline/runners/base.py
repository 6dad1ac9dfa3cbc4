"""What every runner shares: the interface, progress events and parameter resolution."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from jupyter_pipeline.model import Parameter, ParameterType, Pipeline, Run

__all__ = ["ParameterError", "RunEvent", "Runner", "check_parameter", "resolve_parameters"]


@dataclass(frozen=True)
class RunEvent:
    """Progress notification passed to ``on_event``.

    Attributes:
        kind: ``run`` (the run changed state or was created), ``step`` (a step changed
            state) or ``warming`` (a step's kernel started ahead of its inputs).
        run: Snapshot of the run after the change.
        step: The step concerned (``step``/``warming`` events).
    """

    kind: Literal["run", "step", "warming"]
    run: Run
    step: str | None = None


EventCallback = Callable[[RunEvent], None]


class Runner(Protocol):
    """Interface shared by LocalRunner and KfpRunner."""

    def run(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        output: str | Path | None = None,
        on_event: EventCallback | None = None,
    ) -> Run:
        """Run ``pipeline`` to the end and return the finished run."""
        ...

    def cancel(self, run_id: str) -> bool:
        """Stop a run; True if something was stopped."""
        ...


class ParameterError(ValueError):
    """A parameter override names no parameter or has the wrong type."""


_PY_TYPES: dict[ParameterType, tuple[type, ...]] = {
    ParameterType.int: (int,),
    ParameterType.float: (float, int),
    ParameterType.str: (str,),
    ParameterType.bool: (bool,),
    ParameterType.list: (list, tuple),
    ParameterType.dict: (dict,),
    ParameterType.none: (object,),
}


def check_parameter(param: Parameter, value: Any) -> Any:
    """Check ``value`` against the parameter's type; return it (ints widened to float).

    Raises:
        ParameterError: The value has the wrong type.
    """
    types = _PY_TYPES[param.type]
    ok = isinstance(value, types)
    if param.type in (ParameterType.int, ParameterType.float) and isinstance(value, bool):
        ok = False  # bool is an int subclass, but `epochs=True` is a mistake
    if not ok:
        raise ParameterError(
            f"parameter {param.name} is {param.type.value} (default {param.default!r}, cell "
            f"{param.cell}); got {value!r} of type {type(value).__name__}"
        )
    if param.type is ParameterType.float and isinstance(value, int):
        return float(value)
    if param.type is ParameterType.list and isinstance(value, tuple):
        return list(value)
    return value


def resolve_parameters(pipeline: Pipeline, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of every pipeline parameter, with ``overrides`` applied and type-checked.

    Raises:
        ParameterError: An override names no parameter, or has the wrong type.
    """
    known = {p.name: p for p in pipeline.parameters}
    values = {p.name: p.default for p in pipeline.parameters}
    for name, value in (overrides or {}).items():
        if name not in known:
            derived = next(
                (
                    d
                    for d in pipeline.diagnostics
                    if d.code == "parameter-derived" and name in d.names
                ),
                None,
            )
            if derived is not None:
                params = ", ".join(known) or "none"
                raise ParameterError(
                    f"{name!r} is computed in the parameters cell (cell {derived.cell}, line "
                    f"{derived.line}), not a literal parameter, so it cannot be overridden; "
                    f"override what it is computed from (parameters: {params})"
                )
            listed = ", ".join(known) or "none (the notebook has no parameters cell)"
            raise ParameterError(f"unknown parameter {name!r}; known parameters: {listed}")
        values[name] = check_parameter(known[name], value)
    return values
