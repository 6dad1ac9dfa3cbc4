"""The end of the notebook-order pass: a step outputs what later steps take from it; edges
(data, state, file, ``prev:``) carry the reasons in words; steps that may run at the same
time are checked for conflicting producers and files; the result is the Pipeline model.
"""

from __future__ import annotations

from collections import defaultdict

from jupyter_pipeline.analysis.bindings import PassState
from jupyter_pipeline.model import Definition, Edge, EdgeKind, Pipeline, Severity, Step

__all__ = ["PipelineAssembly"]


class PipelineAssembly(PassState):
    """After the pass: outputs from what later steps take, edges with their reasons,
    ordering checks, and the Pipeline model."""

    def need(
        self, producer: str | None, name: str, seen: set[tuple[str, str]] | None = None
    ) -> None:
        """Make `producer` output `name`, passing it through when it only maybe rebinds it."""
        if producer is None:
            return
        seen = seen or set()
        if (producer, name) in seen:
            return
        seen.add((producer, name))
        st = self.by_name[producer]
        st.outputs.add(name)
        through = st.passthrough.get(name)
        if through is not None and name not in st.inputs:
            if through.kind == "param":
                st.params.add(name)
            elif through.kind == "data":
                st.inputs[name] = through
                st.input_at[name] = st.passthrough_at.get(name, (st.span.cells[0], 1))
                self.need(through.step, name, seen)

    def role_parameters(self) -> set[str]:
        """Parameters read by imports/functions cells: they replay in every step."""
        param_cell = {q.name: q.cell for q in self.parameters}
        out: set[str] = set()
        for d in self.role_defs:
            bound: set[str] = set()
            for ev in self.facts[d.cell].events:
                if ev.op == "bind":
                    bound.add(ev.name)
                elif (
                    ev.op in ("read", "mutate")
                    and ev.name not in bound
                    and param_cell.get(ev.name, d.cell) < d.cell
                ):
                    out.add(ev.name)
        return out

    def assemble(self) -> Pipeline:
        role_params = self.role_parameters()
        # Outputs follow from what later steps take (iterate: pass-through adds inputs).
        for st in self.steps:
            for name, b in list(st.inputs.items()):
                self.need(b.step, name)
        for st in self.steps:
            for pv, (producer, _, _) in st.state_inputs.items():
                if producer is not None:
                    self.by_name[producer].state_outputs.add(pv)

        replay_sorted = []
        for st in self.steps:
            for d in st.state_defs:
                replay_sorted.append((st.index, d))

        order = {st.name: st.index for st in self.steps}
        edges: list[Edge] = []
        deps: dict[str, set[str]] = {st.name: set() for st in self.steps}
        prev_targets: dict[str, list[tuple[str, int]]] = {}
        for st in self.steps:
            for target, cell in st.span.prev:
                resolved = (
                    target
                    if target in self.by_name
                    else next(
                        (s.name for s in self.steps if _kfp(s.span.display_name) == target), None
                    )
                )
                if resolved is None:
                    continue  # the parser already refused unknown targets
                prev_targets.setdefault(st.name, []).append((resolved, cell))

        for st in self.steps:
            by_src: dict[str, list[str]] = defaultdict(list)
            for name, b in st.inputs.items():
                if b.step is not None:
                    by_src[b.step].append(name)
            for src in sorted(by_src, key=order.__getitem__):
                names = sorted(by_src[src])
                reasons = []
                for n in names:
                    b = st.inputs[n]
                    cell, line = st.input_at[n]
                    if b.shares_with:
                        reasons.append(
                            f"{n}: read in {st.name} (cell {cell}, line {line}); it shares "
                            f"objects with {b.shares_with} since {src} (cell {b.cell}, line "
                            f"{b.line}), so both travel from there"
                        )
                    else:
                        via = f", {st.input_via[n]}" if n in st.input_via else ""
                        reasons.append(
                            f"{n}: read in {st.name} (cell {cell}, line {line}){via}, last "
                            f"changed in {src} (cell {b.cell}, line {b.line})"
                        )
                edges.append(
                    Edge(
                        source=src,
                        target=st.name,
                        kind=EdgeKind.data,
                        variables=names,
                        reason="; ".join(reasons),
                    )
                )
                deps[st.name].add(src)
            for pv, (producer, cell, line) in sorted(st.state_inputs.items()):
                if producer is None:
                    continue
                edges.append(
                    Edge(
                        source=producer,
                        target=st.name,
                        kind=EdgeKind.state,
                        variables=[pv],
                        reason=f"{st.name} draws from the global {pv} generator (cell "
                        f"{cell}, line {line}); its state comes from {producer}",
                    )
                )
                deps[st.name].add(producer)
            for target, cell in prev_targets.get(st.name, []):
                edges.append(
                    Edge(
                        source=target,
                        target=st.name,
                        kind=EdgeKind.prev,
                        reason=f"prev:{target} tag on cell {cell}",
                    )
                )
                deps[st.name].add(target)
            files: dict[str, list[str]] = defaultdict(list)
            why: dict[str, list[str]] = defaultdict(list)
            for p, (src, wc, _wl, rc, rl) in st.file_sources.items():
                files[src].append(p)
                why[src].append(
                    f"{p}: written in {src} (cell {wc}), read in {st.name} (cell {rc}, line {rl})"
                )
            for src in sorted(files, key=order.__getitem__):
                edges.append(
                    Edge(
                        source=src,
                        target=st.name,
                        kind=EdgeKind.file,
                        variables=sorted(files[src]),
                        reason="; ".join(why[src]),
                    )
                )
                deps[st.name].add(src)

        ancestors: dict[str, set[str]] = {}
        for st in self.steps:
            anc: set[str] = set()
            for dep in deps[st.name]:
                anc |= {dep} | ancestors[dep]
            ancestors[st.name] = anc
        self.check_parallel(ancestors)
        self.check_file_conflicts(ancestors)

        steps = []
        for st in self.steps:
            defs = sorted(
                [
                    *self.role_defs,
                    *st.definitions.values(),
                    *(d for k, d in replay_sorted if k < st.index),
                ],
                key=lambda d: (d.cell, d.line),
            )
            unique: dict[tuple[int, int, str], Definition] = {}
            for d in defs:  # a state setting's import may also be one of the step's own
                unique.setdefault((d.cell, d.line, d.source), d)
            defs = list(unique.values())
            steps.append(
                Step(
                    name=st.name,
                    display_name=st.span.display_name
                    if st.span.role == "step"
                    else "pipeline-metrics",
                    role="metrics" if st.span.role == "metrics" else "step",
                    cells=list(st.span.cells),
                    inputs=sorted(st.inputs),
                    input_sources={n: b.step for n, b in sorted(st.inputs.items()) if b.step},
                    outputs=sorted(st.outputs),
                    parameters=sorted(st.params | role_params),
                    definitions=defs,
                    state_inputs={pv: p for pv, (p, _, _) in sorted(st.state_inputs.items()) if p},
                    state_outputs=sorted(st.state_outputs),
                    metrics=list(st.metrics),
                    depends_on=sorted(deps[st.name], key=order.__getitem__),
                    settings=st.span.settings,
                )
            )
        self.diags.sort(key=lambda d: (d.cell if d.cell is not None else -1, d.line or 0, d.code))
        nb = self.nb
        return Pipeline(
            name=nb.name,
            notebook=nb.path,
            description=nb.description,
            steps=steps,
            edges=edges,
            parameters=self.parameters,
            metrics=self.metrics,
            diagnostics=self.diags,
            image=nb.image,
            experiment=nb.experiment,
            kernel_name=nb.kernel_name,
        )

    def check_parallel(self, ancestors: dict[str, set[str]]) -> None:
        for st in self.steps:
            for name, b in st.inputs.items():
                p = b.step
                if p is None:
                    continue
                for w in self.writers.get(name, []):
                    if w == p or self.by_name[w].index >= st.index:
                        continue
                    anc = ancestors[st.name]
                    if w in anc and p in anc and w not in ancestors[p] and p not in ancestors[w]:
                        cell, line = st.input_at[name]
                        self.diag(
                            "parallel-producers",
                            Severity.warning,
                            cell,
                            line,
                            f"{name!r} is produced by both {w!r} and {p!r}, which have no "
                            f"order between them; {st.name!r} takes {p!r}'s (the later in "
                            "the notebook) — add prev: tags or rename to make it explicit",
                            st.name,
                            [name],
                        )

    def check_file_conflicts(self, ancestors: dict[str, set[str]]) -> None:
        seen: dict[str, tuple[str, int, int]] = {}
        for st in self.steps:
            for p, (cell, line) in st.files_written.items():
                other = seen.get(p)
                if other and other[0] not in ancestors[st.name]:
                    self.diag(
                        "file-conflict",
                        Severity.warning,
                        cell,
                        line,
                        f"{p!r} is also written by step {other[0]!r} (cell {other[1]}), "
                        "which may run at the same time; write distinct files or order "
                        "the steps with prev:",
                        st.name,
                        [p],
                    )
                seen[p] = (st.name, cell, line)


def _kfp(name: str) -> str:
    from jupyter_pipeline.notebook import kfp_name

    return kfp_name(name)
