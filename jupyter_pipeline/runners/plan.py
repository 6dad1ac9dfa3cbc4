"""What a local run would do now, step by step, without running anything.

For each step: ``cached`` (its cache entry matches: same code, inputs, parameters and data
files as an earlier run) or ``will run``, with the reason — never run, code changed, an
input changed, a data file changed, a parameter changed, an upstream step will run, cache
off (for the run, or for this step: then its key is not computed, its data files not hashed).
Computed the way :class:`~jupyter_pipeline.runners.local.LocalRunner` computes its cache keys
(:meth:`~jupyter_pipeline.runners.cache.StepCache.key`); the reasons come from comparing
the key's parts with those recorded with the step's last cache entry.

Used by ``jupyter-pipeline run --dry-run`` and the server's ``POST analyze``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from nbformat import NotebookNode
from pydantic import BaseModel, ConfigDict

from jupyter_pipeline.model import Pipeline, Step
from jupyter_pipeline.runners.base import resolve_parameters
from jupyter_pipeline.runners.cache import StepCache, default_cache_dir, files_read, step_code
from jupyter_pipeline.runtime.kernel import state_key
from jupyter_pipeline.store import RunStore

__all__ = ["PlanItem", "plan_run"]


class PlanItem(BaseModel):
    """What a run would do with one step now.

    Attributes:
        step: Step name.
        action: ``cached`` (its results are reused) or ``will run``.
        reason: Why, in a few words (``never run``, ``code changed``, ``input x changed``,
            ``data file data.csv changed``, ``upstream step prepare will run``…).
        run: The earlier run whose results a cached step reuses (or that a step that will run
            was compared with), if known.
    """

    model_config = ConfigDict(extra="forbid")

    step: str
    action: Literal["cached", "will run"]
    reason: str
    run: str | None = None


def _deps(step: Step, names: set[str]) -> list[str]:
    # As LocalRunner's build_nodes: tagged dependencies, then every data/state source.
    deps = [d for d in step.depends_on if d in names and d != step.name]
    for src in [*step.input_sources.values(), *step.state_inputs.values()]:
        if src in names and src not in deps and src != step.name:
            deps.append(src)
    return deps


def _why(old: Mapping[str, Any] | None, new: Mapping[str, Any], producers: dict[str, str]) -> str:
    """The first difference between an earlier key's parts and this one's, in words."""
    if old is None:
        return "changed since the last run (no details recorded)"
    if old.get("code") != new["code"]:
        return "code changed"
    old_params, new_params = old.get("parameters", {}), new["parameters"]
    changed = sorted(
        k for k in set(old_params) | set(new_params) if old_params.get(k) != new_params.get(k)
    )
    if changed:
        return f"parameter {', '.join(changed)} changed"
    old_files, new_files = old.get("files", {}), new["files"]
    changed = sorted(
        k for k in set(old_files) | set(new_files) if old_files.get(k) != new_files.get(k)
    )
    if changed:
        return f"data file {', '.join(changed)} changed"
    old_in, new_in = old.get("inputs", {}), new["inputs"]
    changed = sorted(k for k in set(old_in) | set(new_in) if old_in.get(k) != new_in.get(k))
    if changed:
        shown = [
            f"{k.removeprefix(state_key(''))} (from {producers[k]})" if k in producers else k
            for k in changed
        ]
        return f"input {', '.join(shown)} changed"
    if old.get("env") != new["env"]:
        return "environment variables changed"
    if old.get("kernel") != new["kernel"] or old.get("runtime") != new["runtime"]:
        return "kernel or jupyter-pipeline version changed"
    return "outputs changed"


def plan_run(
    pipeline: Pipeline,
    nb: NotebookNode,
    path: str | Path,
    store: RunStore,
    *,
    parameters: Mapping[str, Any] | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> list[PlanItem]:
    """What a local run of ``nb`` would do now, per step, without running anything.

    Args:
        pipeline: ``nb`` analyzed.
        nb: The notebook (the editor's unsaved content is fine: nothing is written).
        path: The notebook's path: relative data files resolve in its folder, and its
            earlier runs are found by it.
        store: The run store (its runs and step cache are read).
        parameters: Parameter overrides, as a run would get them.
        cache: False plans a ``--no-cache`` run (every step runs).
        cache_dir: The step cache (default: beside the store, as LocalRunner's).

    Raises:
        ParameterError: An override is unknown or has the wrong type.
    """
    from jupyter_pipeline.runtime.notebook import build_step_notebook

    path = Path(path).absolute()
    values = resolve_parameters(pipeline, parameters)
    step_cache = StepCache(cache_dir or default_cache_dir(store.folder))
    names = {s.name for s in pipeline.steps}
    actions: dict[str, PlanItem] = {}
    # name -> digest of each output of a cached step (what its dependents would load)
    saved: dict[str, dict[str, str]] = {}
    for step in pipeline.steps:
        deps = _deps(step, names)
        upstream = [d for d in deps if actions[d].action == "will run"]
        if not cache:
            actions[step.name] = PlanItem(step=step.name, action="will run", reason="cache off")
            continue
        if step.settings.cache is False:
            actions[step.name] = PlanItem(
                step=step.name, action="will run", reason="cache off for this step"
            )
            continue
        if upstream:
            actions[step.name] = PlanItem(
                step=step.name,
                action="will run",
                reason=f"upstream step {', '.join(upstream)} will run",
            )
            continue
        # Input digests: from the producers' cache entries, as LocalRunner's resolve_inputs.
        digests: dict[str, str] = {}
        producers: dict[str, str] = {}
        wanted = [(v, step.input_sources.get(v)) for v in step.inputs]
        wanted += [(state_key(k), src) for k, src in step.state_inputs.items()]
        for key, src in wanted:
            candidates = [src] if src in names else []
            candidates += [d for d in reversed(deps) if d not in candidates]
            for p in candidates:
                if key in saved.get(p, {}):
                    digests[key] = saved[p][key]
                    producers[key] = p
                    break
        step_nb = build_step_notebook(nb, pipeline, step.name)
        outputs = [*step.outputs, *(state_key(s) for s in step.state_outputs)]
        what: dict[str, Any] = {
            "code": step_code(step_nb),
            "inputs": digests,
            "parameters": {n: values[n] for n in step.parameters if n in values},
            "outputs": outputs,
            "kernel_name": pipeline.kernel_name,
            "env": step.settings.env,
            "files": files_read(step_nb, path.parent),
        }
        key = StepCache.key(**what)
        previous = store.recent_cache_keys(path, step.name)
        entry = step_cache.lookup(key, outputs)
        if entry is not None:
            saved[step.name] = {v.name: v.digest for v in entry.outputs}
            same = next((rid for rid, k in previous if k == key), None)
            reason = f"unchanged since run {same}" if same else "unchanged (in the step cache)"
            actions[step.name] = PlanItem(step=step.name, action="cached", reason=reason, run=same)
            continue
        last = next(((rid, k) for rid, k in previous if step_cache.has(k)), None)
        if last is None:
            reason = "never run" if not previous else "earlier results were pruned"
            actions[step.name] = PlanItem(step=step.name, action="will run", reason=reason)
            continue
        reason = _why(step_cache.parts_of(last[1]), StepCache.key_parts(**what), producers)
        actions[step.name] = PlanItem(step=step.name, action="will run", reason=reason, run=last[0])
    return [actions[s.name] for s in pipeline.steps]
