"""Name events of the notebook-order pass: what reading, binding, deleting or changing a
global name in a step means for the step's inputs and outputs.

A name a step reads or may change without having surely bound it is an input, resolved to
the last step before it in notebook order that may have changed it: an in-place mutation
in a sibling step, a conditional rebinding or a function that rebinds a global through
``global`` all make their step the producer of the name.
"""

from __future__ import annotations

import re

from jupyter_pipeline.analysis.bindings import Binding, PassState, StepState
from jupyter_pipeline.analysis.facts import CallInfo, Cond, DefInfo, Event
from jupyter_pipeline.analysis.knowledge import HISTORY_NAMES, KERNEL_NAMES
from jupyter_pipeline.model import Definition, DefinitionKind, Severity

__all__ = ["NameEvents"]

_HISTORY_RE = re.compile(r"^_(i{0,3}\d+)$")
_DEF_KINDS = ("import", "function", "class")


class NameEvents(PassState):
    """Reads, binds, deletes and in-place changes of global names, step by step.

    A step keeps what it binds locally; a name it reads or may change without having
    surely bound it is an input, resolved to the last step before it that may have changed
    it (``env``). Definitions (imports, functions, classes) are replayed, not passed.
    """

    # Implemented by CallEffects (calls.py), which builds on these events: applying a
    # function charges the calls its body makes.
    def call(
        self, st: StepState, call: CallInfo, cell: int, line: int, cond: Cond, in_function: bool
    ) -> None:
        raise NotImplementedError

    def read(
        self,
        st: StepState,
        name: str,
        cell: int,
        line: int,
        cond: Cond,
        _active: set[int] | None = None,
    ) -> None:
        if name in st.sure:
            self.apply_definition(st, st.local.get(name), cell, line, _active)
            return
        outside = self.env.get(name)
        local = st.local.get(name)
        if local is not None and local.kind == "deleted" and name not in st.maybe:
            outside = local  # deleted earlier in this step: that is what a read meets
        if name in st.maybe:
            self.apply_definition(st, local, cell, line, _active)
            if name in st.sure:  # a function applied just above may have bound it
                return
            if any(cond[: len(b)] == b for b in st.maybe.get(name, ())):
                return  # bound earlier in a block around this read: surely bound here
            if outside is None or outside.kind == "deleted":
                return
        if outside is None or outside.kind == "deleted":
            self.undefined(st, name, cell, line, outside, in_function=_active is not None)
            return
        if outside.kind == "param":
            st.params.add(name)
            return
        if outside.kind == "derived":
            self.use_derived(st, name, cell, line)
            return
        if outside.kind == "role":
            return
        if outside.kind in _DEF_KINDS:
            if outside.step is not None:
                self.add_definition(st, outside, cell, line, _active)
            self.apply_definition(st, outside, cell, line, _active)
            return
        if not outside.sure:
            self.diag(
                "conditional-definition",
                Severity.warning,
                cell,
                line,
                f"{name!r} is only defined under a condition (cell {outside.cell}, line "
                f"{outside.line}); if that branch did not run this fails — define it "
                "unconditionally",
                st.name,
                [name],
            )
        if name not in st.inputs:
            st.inputs[name] = outside
            st.input_at[name] = (cell, line)
        st.sure.add(name)  # loaded at the step's start: present from here on
        # A function that travels as data (defined under a condition) still reads and
        # changes globals when called here.
        self.apply_definition(st, outside, cell, line, _active)
        cls = outside.instance_of
        if cls is not None:
            # An instance of a notebook class: the consumer defines the class itself (so the
            # loaded object is of *its* class) and its methods read the consumer's globals.
            if cls.step is not None:
                self.add_definition(st, cls, cell, line, _active)
            self.apply_definition(st, cls, cell, line, _active)
            for code_name, why in outside.code_reads:  # evaluated when its methods run here
                self.read_via(st, code_name, why, cell, line, cond)
        st.passthrough.pop(name, None)

    def read_via(
        self, st: StepState, name: str, why: str, cell: int, line: int, cond: Cond
    ) -> None:
        """Read ``name``; if that makes it an input, remember how it was read (for the edge)."""
        was_input = name in st.inputs
        self.read(st, name, cell, line, cond)
        if not was_input and name in st.inputs:
            st.input_via[name] = why

    def use_derived(self, st: StepState, name: str, cell: int, line: int) -> None:
        """A step reads a derived value: it replays the line, and takes what the line reads."""
        key, snippet, reads = self.derived[name]
        if key in st.definitions:
            return
        st.definitions[key] = snippet
        params = {p.name for p in self.parameters}
        for r in reads:
            if r in params:  # the parameters lines run again before it (see DERIVED_TAG)
                st.params.add(r)
            else:
                self.read(st, r, cell, line, ())

    def undefined(
        self,
        st: StepState,
        name: str,
        cell: int,
        line: int,
        outside: Binding | None,
        in_function: bool,
    ) -> None:
        if name in KERNEL_NAMES:
            return
        if name in HISTORY_NAMES or _HISTORY_RE.match(name):
            self.diag(
                "output-history",
                Severity.warning,
                cell,
                line,
                f"{name!r} reads IPython's output history, which does not exist in a "
                "step's fresh kernel; assign the value to a variable instead",
                st.name,
                [name],
            )
            return
        if outside is not None and outside.kind == "deleted":
            self.diag(
                "deleted-name",
                Severity.error,
                cell,
                line,
                f"{name!r} was deleted in cell {outside.cell} (line {outside.line}) before "
                "this read; remove the `del` or the read",
                st.name,
                [name],
            )
            return
        if in_function:
            self.diag(
                "undefined-name-in-function",
                Severity.warning,
                cell,
                line,
                f"a function called here reads {name!r}, which is not defined at this "
                "point; it fails if that code path runs",
                st.name,
                [name],
            )
            return
        if self.uncertain_from is not None and self.uncertain_from <= cell:
            self.diag(
                "maybe-undefined",
                Severity.warning,
                cell,
                line,
                f"{name!r} is not defined by any visible code; it may come from the star "
                f"import or magic in cell {self.uncertain_from} — import it explicitly",
                st.name,
                [name],
            )
            return
        if name in self.skip_bound and name not in self.ever_bound:
            self.diag(
                "defined-in-skipped-cell",
                Severity.error,
                cell,
                line,
                f"{name!r} is only defined in skip-tagged cell {self.skip_bound[name]}; "
                "untag that cell or define it in a step",
                st.name,
                [name],
            )
            return
        later = self.ever_bound.get(name)
        if later is not None and later >= cell:
            self.diag(
                "used-before-definition",
                Severity.error,
                cell,
                line,
                f"{name!r} is read here but first defined later, in cell {later}; move "
                "the definition above or reorder the cells",
                st.name,
                [name],
            )
            return
        if later is not None:
            return  # bound in an earlier cell of a role we do not track as data (e.g. metrics)
        self.diag(
            "undefined-name",
            Severity.error,
            cell,
            line,
            f"{name!r} is read but never defined in this notebook (a typo?); define it "
            "or fix the name",
            st.name,
            [name],
        )

    def add_definition(
        self, st: StepState, b: Binding, cell: int, line: int, active: set[int] | None
    ) -> None:
        info = b.info
        if info is None or info.statement_id in st.definitions:
            return
        kind = {
            "import": DefinitionKind.import_,
            "function": DefinitionKind.function,
            "class": DefinitionKind.class_,
        }[b.kind]
        names = sorted(n for n, x in self.env.items() if x.info is info) or [b.name]
        st.definitions[info.statement_id] = Definition(
            cell=b.cell, line=b.line, kind=kind, names=names, source=info.source
        )
        # What the statement itself reads when replayed (decorators, defaults, bases…).
        then = self.def_versions.get(info.statement_id, {})
        for r in info.reads:
            before, now = then.get(r), self.env.get(r)
            if before is not None and before.kind == "data" and now is not before:
                changed = now.cell if now is not None else "?"
                self.diag(
                    "definition-time-value",
                    Severity.warning,
                    cell,
                    line,
                    f"{b.name!r} (cell {b.cell}) evaluates {r!r} when it is defined (a default, "
                    f"decorator or class body), and {r!r} changes in cell {changed} before step "
                    f"{st.name!r} uses {b.name!r}: the definition replayed there sees the new "
                    f"value — pass {r!r} as an argument, or define {b.name!r} after the change",
                    st.name,
                    [b.name, r],
                )
            self.read(st, r, cell, line, (), active)

    def apply_definition(
        self, st: StepState, b: Binding | None, cell: int, line: int, active: set[int] | None
    ) -> None:
        """A use of a function or class: charge what calling it reads and changes."""
        if b is None or b.info is None or b.info.summary is None:
            return
        sid = b.info.statement_id
        active = set() if active is None else active
        if sid in active:
            return
        active.add(sid)
        s = b.info.summary
        for r in sorted(s.reads):
            self.read(st, r, cell, line, (-1,), active)
        for w in sorted(s.writes):
            self.bind_name(st, w, "data", None, cell, line, cond=(-1,))
        for m in sorted(s.mutates):
            self.mutate(st, m, cell, line, None)
        for c in s.calls:
            self.call(st, c, cell, line, (-1,), in_function=True)
        active.discard(sid)

    def bind(self, st: StepState, ev: Event, cell: int) -> None:
        if ev.kind == "merge":  # every branch bound it: surely bound from here on
            if ev.name in st.maybe:
                st.maybe.pop(ev.name)
                st.sure.add(ev.name)
                st.passthrough.pop(ev.name, None)
                if ev.name in st.writes:
                    st.writes[ev.name].cond = ()
            return
        if isinstance(ev.info, DefInfo) and ev.info.reads:
            self.def_versions[ev.info.statement_id] = {
                r: self.current(st, r) for r in ev.info.reads
            }
        kind = ev.kind if ev.kind in _DEF_KINDS and not ev.cond else "data"
        if ev.kind in ("function", "class") and ev.cond:
            kind = "data"
        self.bind_name(st, ev.name, kind, ev.info, cell, ev.line, ev.cond)

    def bind_name(
        self,
        st: StepState,
        name: str,
        kind: str,
        info: DefInfo | None,
        cell: int,
        line: int,
        cond: Cond,
    ) -> None:
        prev = self.env.get(name)
        if prev is not None and prev.kind == "param":
            self.diag(
                "parameter-reassigned",
                Severity.warning,
                cell,
                line,
                f"pipeline parameter {name!r} is reassigned here; steps after this one "
                "see the new value, so overriding the parameter does not reach them",
                st.name,
                [name],
            )
        self.unalias(name)
        # A conditionally defined function is data (pickled) but still has effects when called.
        b = Binding(name, kind, st.name, cell, line, cond, info)
        if cond:
            if name not in st.sure:
                st.maybe.setdefault(name, []).append(cond)
                if (
                    prev is not None
                    and prev.kind not in ("deleted",)
                    and name not in st.passthrough
                ):
                    st.passthrough[name] = prev
        else:
            st.sure.add(name)
            st.maybe.pop(name, None)
            st.passthrough.pop(name, None)
        st.local[name] = b
        st.writes[name] = b

    def unalias(self, name: str) -> None:
        """``name`` now refers to a new object: it leaves its alias group."""
        group = self.aliases.pop(name, None)
        if group is not None:
            group.discard(name)

    def alias(
        self, st: StepState, target: str, source: str, cell: int, line: int, cond: Cond
    ) -> None:
        """``target`` was bound to (part of) ``source``'s object.

        Both must then travel together: this step produces every member of the group, so
        a later step loads them from one place, where the serializer keeps them one object,
        and a change through either name reaches the other — as in the notebook.
        """
        src = self.current(st, source)
        if src is None or src.kind != "data" or src.immutable or source == target:
            return  # aliasing a module, function or parameter value shares nothing mutable
        group = self.aliases.get(source, {source}) | self.aliases.get(target, {target})
        for member in group:
            self.aliases[member] = group
        for member in sorted(group - {target}):
            self._mutate_one(
                st,
                member,
                cell,
                line,
                Event("mutate", member, line, cond, "alias", target),
                through_alias=True,
            )

    def mutate(
        self,
        st: StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
    ) -> None:
        """``name``'s object may change here; so do the objects of its aliases."""
        self._mutate_one(st, name, cell, line, ev)
        for member in sorted(self.aliases.get(name, set()) - {name}):
            self._mutate_one(st, member, cell, line, ev, through_alias=True)

    def _mutate_one(
        self,
        st: StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
        through_alias: bool = False,
    ) -> None:
        """``name``'s object may change here.

        ``through_alias``: the change is made through another name of the same object (an
        alias group member), not through ``name`` itself.
        """
        if name in st.sure:
            mine = st.local.get(name)
            if (
                mine is not None
                and mine.kind == "import"
                and ev is not None
                and ev.kind not in ("method", "alias")
                and isinstance(ev.info, str)
            ):
                # `plt.rcParams[…] = …` right after the import: global state all the same.
                self.state_statement(st, cell, line, ev.info, ev.cond, f"{name}.…")
                return
            if name in st.inputs and name not in st.writes:
                # An input changed in place (read first, so it is "sure" here): later
                # readers must take it from this step, not from its producer.
                self.changed_here(st, name, cell, line, ev, st.inputs[name].instance_of)
            return  # a local object changed in place: still this step's value
        cond = ev.cond if ev is not None else (-1,)
        if any(cond[: len(b)] == b for b in st.maybe.get(name, ())):
            return  # bound earlier in a block around this change: a local object
        local = st.local.get(name) if name in st.maybe else None
        outside = self.env.get(name)
        base = local or outside
        if base is None or base.kind == "deleted":
            return  # the read before it reported the undefined name
        # A value made in an imports/functions cell (no DefInfo) is data once a step changes
        # it: later steps must load the changed value, not replay the original.
        if base.kind in _DEF_KINDS or (base.kind == "role" and base.info is not None):
            # Changing a module (pd.options.x = …, plt.rcParams[…] = …) is global state.
            if (
                ev is not None
                and ev.kind not in ("method", "alias")
                and isinstance(ev.info, str)
                and base.kind in ("import", "role")
            ):
                self.state_statement(st, cell, line, ev.info, ev.cond, f"{name}.…")
            return
        if outside is not None:
            if outside.kind == "param":
                st.params.add(name)
                self.diag(
                    "parameter-reassigned",
                    Severity.warning,
                    cell,
                    line,
                    f"pipeline parameter {name!r} is changed in place here; steps after "
                    "this one see the changed value",
                    st.name,
                    [name],
                )
            elif outside.kind == "data" and name not in st.inputs and through_alias:
                # Changed only through another name: this step holds the changed value from
                # here on, but it needs the old one only when a later step reads the name
                # (`need` makes it an input then, as for a name the step maybe rebinds). A
                # loop variable an earlier step left in the group (`for dataset in data:`)
                # and this step rebinds is then no input, and no needless KFP artifact.
                st.passthrough.setdefault(name, outside)
                st.passthrough_at.setdefault(name, (cell, line))
                self.changed_here(st, name, cell, line, ev, base.instance_of)
                return
            elif outside.kind == "data" and name not in st.inputs:
                # (an alias group pulling in a maybe-bound loop variable is no user error)
                if not outside.sure and not (ev is not None and ev.kind == "alias"):
                    self.diag(
                        "conditional-definition",
                        Severity.warning,
                        cell,
                        line,
                        f"{name!r} is only defined under a condition (cell "
                        f"{outside.cell}); define it unconditionally",
                        st.name,
                        [name],
                    )
                st.inputs[name] = outside
                st.input_at[name] = (cell, line)
        self.changed_here(st, name, cell, line, ev, base.instance_of)
        st.sure.add(name)
        st.maybe.pop(name, None)
        st.passthrough.pop(name, None)  # the outside value is now an explicit input

    def changed_here(
        self,
        st: StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
        instance_of: Binding | None,
    ) -> None:
        """``name``'s object changed in place in this step: the step now produces it."""
        b = Binding(name, "data", st.name, cell, line, instance_of=instance_of)
        if ev is not None and ev.kind == "alias":
            b.shares_with = ev.info
        st.local[name] = b
        st.writes[name] = b

    def delete(self, st: StepState, name: str, cell: int, line: int, cond: Cond) -> None:
        outside = self.env.get(name)
        local = st.local.get(name)
        if name not in st.sure and name not in st.maybe:
            if local is not None and local.kind == "deleted":
                outside = local
            if outside is None or outside.kind == "deleted":
                self.undefined(st, name, cell, line, outside, in_function=False)
                return
            # `del x` needs x in this step's kernel too: it is an input like a read.
            self.read(st, name, cell, line, cond)
        if (
            cond
            and name not in st.sure
            and (outside is None or outside.kind == "deleted")
            and all(c[: len(cond)] == cond for c in st.maybe.get(name, ()))
        ):
            # Bound and deleted in the same block (`except … as e` does this): whichever
            # way the block goes, the name does not exist afterwards.
            cond = ()
        if cond:
            # Maybe deleted: the value may or may not exist afterwards, exactly as in the
            # notebook; consumers get it through this step either way.
            self.bind_name(st, name, "data", None, cell, line, cond=cond)
            return
        self.unalias(name)
        b = Binding(name, "deleted", st.name, cell, line)
        st.sure.discard(name)
        st.maybe.pop(name, None)
        st.passthrough.pop(name, None)
        st.local[name] = b
        st.writes[name] = b

    def commit(self, st: StepState) -> None:
        for name, b in st.writes.items():
            prev = self.env.get(name)
            b.sure = not b.cond or (prev is not None and prev.sure and prev.kind != "deleted")
            b.step = st.name
            self.env[name] = b
            self.writers[name].append(st.name)
        for pv in st.state_writes:
            self.rng[pv] = st.name
        for p, (cell, line) in st.files_written.items():
            self.file_writer[p] = (st.name, cell, line)
