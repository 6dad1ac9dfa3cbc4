"""Reading notebooks and their tags (nbformat), and cutting them into step spans.

Pure: reads a file, never writes one. Everything here speaks in cell indices of the
notebook's ``cells`` list, markdown included, so every message can point at a cell.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nbformat
from nbformat import NotebookNode

from jupyter_pipeline.model import Diagnostic, Severity, StepSettings

__all__ = [
    "Cell",
    "NotebookError",
    "ParsedNotebook",
    "Role",
    "Span",
    "kfp_name",
    "parse_notebook",
    "read_notebook",
]

SplitMode = Literal["tags", "headings", "cells"]
Role = Literal["step", "imports", "functions", "parameters", "metrics", "skip"]

ROLE_TAGS: dict[str, Role] = {
    "imports": "imports",
    "functions": "functions",
    "pipeline-parameters": "parameters",
    "parameters": "parameters",
    "pipeline-metrics": "metrics",
    "skip": "skip",
}
_STEP_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_LIMIT_VALUE = re.compile(r"^[0-9]+(\.[0-9]+)?[A-Za-z]*$")
# Tags owned by other tools (papermill, jupyter-book, nbconvert…) that we leave alone.
_FOREIGN_TAG = re.compile(r"^(injected-parameters|hide|remove|raises-exception|thebe|full-width)")


class NotebookError(Exception):
    """Bad input: the notebook cannot be read or its tags cannot be understood.

    The message is one line naming the file, the cell (when there is one) and the fix.
    """

    def __init__(self, path: str | Path, message: str, cell: int | None = None):
        self.path = str(path)
        self.cell = cell
        self.message = message
        where = f"{self.path}: cell {cell}: " if cell is not None else f"{self.path}: "
        super().__init__(where + message)


@dataclass
class Cell:
    """One notebook cell with its parsed tags."""

    index: int
    cell_type: str
    source: str
    tags: list[str]
    id: str | None = None


@dataclass
class Span:
    """A run of cells that forms one step (or a role such as imports), before analysis.

    Attributes:
        name: KFP-valid unique name (roles use their role name).
        display_name: The name as tagged.
        role: What the span is.
        cells: Cell indices in the span, markdown included.
        prev: Raw ``prev:`` targets (normalized names) with the cell that named each.
        settings: Per-step settings from tags.
        tag_cell: The cell whose tag opened the span.
    """

    name: str
    display_name: str
    role: Role
    cells: list[int] = field(default_factory=list)
    prev: list[tuple[str, int]] = field(default_factory=list)
    settings: StepSettings = field(default_factory=StepSettings)
    tag_cell: int = 0


@dataclass
class ParsedNotebook:
    """A notebook cut into spans, with what parsing noticed."""

    path: str
    nb: NotebookNode
    cells: list[Cell]
    spans: list[Span]
    diagnostics: list[Diagnostic]
    name: str
    description: str = ""
    image: str | None = None
    experiment: str | None = None
    kernel_name: str = "python3"

    def role_cells(self, role: Role) -> list[int]:
        """Indices of code cells in spans with ``role``, in notebook order."""
        return [
            i
            for span in self.spans
            if span.role == role
            for i in span.cells
            if self.cells[i].cell_type == "code"
        ]


def kfp_name(name: str) -> str:
    """Normalize a step or pipeline name into a KFP-valid one.

    KFP component and task names must be lowercase letters, digits and ``-`` and start with a
    letter; ``load_Data`` becomes ``load-data``.
    """
    out = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not out:
        out = "step"
    if not out[0].isalpha():
        out = "s-" + out
    return out


def read_notebook(path: str | Path) -> NotebookNode:
    """Read and validate a notebook file.

    Raises:
        NotebookError: The file is missing, not JSON, not a notebook, or older than nbformat 4.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotebookError(p, "no such file; check the path") from None
    except IsADirectoryError:
        raise NotebookError(p, "is a directory; give the path of an .ipynb file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotebookError(p, f"cannot be read ({exc}); give a UTF-8 .ipynb file") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(
            p, f"is not valid JSON (line {exc.lineno}: {exc.msg}); is it really an .ipynb file?"
        ) from None
    if not isinstance(raw, dict) or ("cells" not in raw and "worksheets" not in raw):
        raise NotebookError(p, "is JSON but not a Jupyter notebook (no 'cells'); give an .ipynb")
    major = raw.get("nbformat")
    if not isinstance(major, int) or major < 4:
        raise NotebookError(
            p,
            f"uses nbformat {major}, which is too old; upgrade it with "
            "`jupyter nbconvert --to notebook --nbformat 4 --inplace` and retry",
        )
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises a zoo of types for malformed documents
        raise NotebookError(p, f"is not a valid notebook ({exc})") from None
    if not any(c.get("cell_type") == "code" for c in nb.cells):
        raise NotebookError(p, "has no code cells; there is nothing to run")
    return nb


def _cell_tags(cell: NotebookNode) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", []) or []
    return [str(t).strip() for t in tags if str(t).strip()]


def _source(cell: NotebookNode) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


@dataclass
class _CellTags:
    step: str | None = None
    role: Role | None = None
    prev: list[str] = field(default_factory=list)
    image: str | None = None
    limits: dict[str, str] = field(default_factory=dict)
    cache: bool | None = None
    retries: int | None = None
    env: dict[str, str] = field(default_factory=dict)


def _parse_tags(path: str, cell: Cell, diags: list[Diagnostic]) -> _CellTags:
    """Interpret one cell's tags; conflicting or malformed tags are bad input."""
    out = _CellTags()
    roles: list[str] = []
    steps: list[str] = []
    for tag in cell.tags:
        if tag in ROLE_TAGS:
            roles.append(tag)
            continue
        head, _, rest = tag.partition(":")
        if head in ("step", "block") and _:
            if not rest:
                continue  # Kale's extension can leave an empty `block:`; it means nothing.
            if not _STEP_NAME.match(rest):
                raise NotebookError(
                    path,
                    f"step name {rest!r} in tag {tag!r} may only use letters, digits, '_' and '-'; "
                    "rename it",
                    cell.index,
                )
            steps.append(rest)
        elif head == "prev" and _:
            if not _STEP_NAME.match(rest):
                raise NotebookError(path, f"tag {tag!r} names no valid step; fix it", cell.index)
            out.prev.append(rest)
        elif head == "image" and _:
            if not rest:
                raise NotebookError(path, "tag 'image:' needs an image reference", cell.index)
            if out.image and out.image != rest:
                raise NotebookError(
                    path, f"two image tags ({out.image!r}, {rest!r}); keep one", cell.index
                )
            out.image = rest
        elif head == "limit" and _:
            resource, sep, value = rest.rpartition(":")
            if not sep or not resource or not _LIMIT_VALUE.match(value):
                raise NotebookError(
                    path,
                    f"tag {tag!r} should read limit:RESOURCE:VALUE, e.g. limit:memory:4Gi",
                    cell.index,
                )
            out.limits[resource] = value
        elif head == "cache" and _:
            if rest not in ("enabled", "disabled"):
                raise NotebookError(
                    path, f"tag {tag!r} should be cache:enabled or cache:disabled", cell.index
                )
            out.cache = rest == "enabled"
        elif head in ("retry", "retries") and _:
            if not rest.isdigit():
                raise NotebookError(
                    path, f"tag {tag!r} should be retry:N, e.g. retry:2", cell.index
                )
            out.retries = int(rest)
        elif head == "env" and _:
            key, eq, value = rest.partition("=")
            if not eq or not key:
                raise NotebookError(path, f"tag {tag!r} should be env:NAME=VALUE", cell.index)
            out.env[key] = value
        elif _FOREIGN_TAG.match(tag):
            continue
        elif head in ("annotation", "label", "volume"):
            diags.append(
                Diagnostic(
                    code="unsupported-tag",
                    severity=Severity.info,
                    cell=cell.index,
                    message=f"tag {tag!r} is a Kale tag this tool does not use; it is ignored",
                )
            )
    distinct_roles = {ROLE_TAGS[r] for r in roles}
    if len(set(steps)) > 1:
        raise NotebookError(
            path,
            f"has two step tags ({', '.join(sorted(set(steps)))}); a cell belongs to one step, "
            "remove one",
            cell.index,
        )
    if len(distinct_roles) > 1 or (distinct_roles and steps):
        conflicting = sorted(set(roles) | {f"step:{s}" for s in steps})
        raise NotebookError(
            path,
            f"has conflicting tags {', '.join(conflicting)}; keep only one of them",
            cell.index,
        )
    if steps:
        out.step = steps[0]
    if distinct_roles:
        out.role = distinct_roles.pop()
    if cell.cell_type != "code" and (out.step or out.role):
        # Kale ignores tags on markdown cells; so do we, but say so.
        diags.append(
            Diagnostic(
                code="tag-on-markdown",
                severity=Severity.info,
                cell=cell.index,
                message="tags on a markdown cell are ignored; put them on a code cell",
            )
        )
        return _CellTags()
    return out


def _apply_settings(span: Span, tags: _CellTags) -> None:
    s = span.settings
    if tags.image:
        s.image = tags.image
    s.limits.update(tags.limits)
    if tags.cache is not None:
        s.cache = tags.cache
    if tags.retries is not None:
        s.retries = tags.retries
    s.env.update(tags.env)


def _heading_level(source: str) -> int | None:
    for line in source.splitlines():
        m = re.match(r"^(#{1,6})\s+\S", line)
        if m:
            return len(m.group(1))
        if line.strip():
            return None
    return None


def _heading_title(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            return line.lstrip("#").strip()
    return "section"


def parse_notebook(
    nb: NotebookNode, path: str | Path = "<notebook>", split: SplitMode = "tags"
) -> ParsedNotebook:
    """Cut a notebook into spans following Kale's tag rules.

    Rules: an untagged cell belongs to the span above it; untagged code before the first step
    tag forms a step of its own (``preamble``); a step name used again after another step
    becomes a new step ``NAME-2`` (with a warning) rather than a merge that would reorder code;
    a notebook without step tags is one step (``main``). ``split="headings"`` starts a step at
    every top-level markdown heading instead of using step tags; ``split="cells"`` makes every
    code cell its own step.

    Raises:
        NotebookError: Conflicting or malformed tags, or ``prev:`` naming an unknown or later step.
    """
    path = str(path)
    diags: list[Diagnostic] = []
    cells = [
        Cell(
            index=i,
            cell_type=c.get("cell_type", "code"),
            source=_source(c),
            tags=_cell_tags(c),
            id=c.get("id"),
        )
        for i, c in enumerate(nb.cells)
    ]
    parsed_tags = [_parse_tags(path, c, diags) for c in cells]

    top_heading = None
    if split == "headings":
        levels = [_heading_level(c.source) for c in cells if c.cell_type == "markdown"]
        present = [lv for lv in levels if lv is not None]
        top_heading = min(present) if present else None
        if top_heading is not None and levels.count(top_heading) == 1:
            # A single title heading (``# Report``) makes a poor split; use the next level.
            deeper = [lv for lv in present if lv > top_heading]
            top_heading = min(deeper) if deeper else top_heading
        if top_heading is None:
            diags.append(
                Diagnostic(
                    code="no-headings",
                    severity=Severity.warning,
                    message="--split headings found no markdown headings; the notebook is one step",
                )
            )

    spans: list[Span] = []
    used: dict[str, int] = {}
    current: Span | None = None  # the span untagged cells join
    last_step: Span | None = None  # the last ordinary step (prev: targets, continuation)
    pending_markdown: list[int] = []

    def unique(base: str, tag_cell: int, resumed_after: str | None = None) -> str:
        name = kfp_name(base)
        if name in used:
            n = used[name] + 1
            while f"{name}-{n}" in used:
                n += 1
            used[name] = n
            new = f"{name}-{n}"
            if resumed_after:
                message = (
                    f"these cells continue step {base!r} after the {resumed_after} cell, "
                    f"which runs in its own place: they form step {new!r}"
                )
                if not has_step_tags and split == "tags":
                    # A newcomer never named a step: say where `main` and `main-2` come from.
                    message = (
                        f"no step: tags, so the notebook is one step {base!r}, split where the "
                        f"{resumed_after} cell runs: the cells after it are step {new!r}"
                    )
                diag = Diagnostic(
                    code="step-split",
                    severity=Severity.info,
                    cell=tag_cell,
                    step=new,
                    message=message,
                )
            else:
                diag = Diagnostic(
                    code="step-name-reused",
                    severity=Severity.warning,
                    cell=tag_cell,
                    step=new,
                    message=(
                        f"step name {base!r} is used again after another step; these cells "
                        f"form a new step {new!r} (merging would reorder code). Rename the tag "
                        "if that is not what you meant"
                    ),
                )
            diags.append(diag)
            used[new] = 1
            return new
        used[name] = 1
        return name

    def open_span(display: str, role: Role, cell: int, resumed_after: str | None = None) -> Span:
        nonlocal current, pending_markdown
        if role == "step":
            name = unique(display, cell, resumed_after)
        else:
            name = role
        span = Span(name=name, display_name=display, role=role, tag_cell=cell)
        # Markdown directly above a step's first cell introduces it: keep it with the step.
        if role == "step" and pending_markdown:
            span.cells.extend(pending_markdown)
            if current is not None:
                for i in pending_markdown:
                    if i in current.cells:
                        current.cells.remove(i)
        pending_markdown = []
        spans.append(span)
        current = span
        return span

    has_step_tags = any(t.step for t in parsed_tags)
    resume: tuple[Span | None, str] | None = None  # the step a role cell interrupted
    for cell, tags in zip(cells, parsed_tags, strict=True):
        i = cell.index
        if cell.cell_type != "code":
            if split == "headings" and top_heading is not None:
                lv = _heading_level(cell.source)
                # Only headings of the split level open a step (a single title above them
                # does not); the heading cell itself leads its step.
                if lv is not None and lv == top_heading:
                    if current is not None and not any(
                        cells[j].cell_type == "code" for j in current.cells
                    ):
                        # A section without code joins the next one rather than vanishing.
                        pending_markdown = list(current.cells)
                    last_step = open_span(_heading_title(cell.source), "step", i)
                    last_step.cells.append(i)
                    continue
            if current is not None:
                current.cells.append(i)
                pending_markdown.append(i)
            else:
                pending_markdown.append(i)
            continue
        if tags.role:
            if tags.role in ("imports", "functions", "parameters", "metrics"):
                span = open_span(tags.role, tags.role, i)
            else:  # skip: its own cell only; untagged cells after it continue the last step
                span = Span(name="skip", display_name="skip", role="skip", cells=[], tag_cell=i)
                spans.append(span)
                pending_markdown = []
            span.cells.append(i)
            _apply_settings(span, tags)
            if tags.role == "skip":
                current = last_step  # a skipped cell does not run: the step goes on around it
            elif tags.role in ("parameters", "metrics"):
                # These run in their own place in the notebook: a step continuing below them
                # would run its later cells before them. Untagged code after them resumes the
                # step as a new one.
                current = None
                resume = (last_step, tags.role)
            continue
        new_step: str | None = None
        if split == "cells":
            new_step = f"c{sum(1 for c in cells[:i] if c.cell_type == 'code')}"
        elif split == "tags" and tags.step:
            new_step = tags.step
        same_as_last = (
            new_step is not None
            and split == "tags"
            and last_step is not None
            and kfp_name(new_step) == kfp_name(last_step.display_name)
        )
        resume_pending = resume
        resume = None
        if same_as_last and current is last_step:
            pass  # the step tagged again on a following cell: still one step
        elif new_step is not None:
            last_step = open_span(new_step, "step", i)
        elif current is None or (
            current.role != "step"
            # Kale: untagged cells continue an imports/functions block, in tagged notebooks.
            and not (current.role in ("imports", "functions") and split == "tags" and has_step_tags)
        ):
            if current is None and resume_pending is not None and resume_pending[0] is not None:
                what = "pipeline-metrics" if resume_pending[1] == "metrics" else "parameters"
                last_step = open_span(resume_pending[0].display_name, "step", i, resumed_after=what)
            elif last_step is None:
                base = "main" if not has_step_tags and split == "tags" else "preamble"
                last_step = open_span(base, "step", i)
            current = last_step
        assert current is not None
        current.cells.append(i)
        pending_markdown = []
        _apply_settings(current, tags)
        if split == "tags":
            for target in tags.prev:
                current.prev.append((kfp_name(target), i))
        elif tags.prev:
            diags.append(
                Diagnostic(
                    code="prev-ignored",
                    severity=Severity.info,
                    cell=i,
                    message=f"prev: tags are ignored with --split {split}; data gives the order",
                )
            )

    # Trailing markdown already sits in the last span; spans that kept only markdown drop.
    spans = [s for s in spans if any(cells[i].cell_type == "code" for i in s.cells)]
    for s in spans:
        s.cells.sort()

    # prev: targets must name an earlier step.
    order = {s.name: k for k, s in enumerate(spans) if s.role == "step"}
    by_display = {kfp_name(s.display_name): s.name for s in spans if s.role == "step"}
    for k, s in enumerate(spans):
        for target, cell_index in s.prev:
            resolved = target if target in order else by_display.get(target)
            if resolved is None:
                raise NotebookError(
                    path,
                    f"tag prev:{target} names no step in this notebook; "
                    f"known steps: {', '.join(order) or 'none'}",
                    cell_index,
                )
            if order[resolved] >= k:
                raise NotebookError(
                    path,
                    f"tag prev:{target} names a step that comes later (or this step itself), "
                    "which would make a cycle; a step can only follow steps above it",
                    cell_index,
                )

    meta = nb.get("metadata", {})
    kale = meta.get("kubeflow_notebook", {}) or {}
    stem = Path(path).stem if path != "<notebook>" else "notebook"
    name = kfp_name(str(kale.get("pipeline_name") or stem))
    return ParsedNotebook(
        path=path,
        nb=nb,
        cells=cells,
        spans=spans,
        diagnostics=diags,
        name=name,
        description=str(kale.get("pipeline_description") or ""),
        image=kale.get("docker_image") or None,
        experiment=(kale.get("experiment") or {}).get("name")
        or kale.get("experiment_name")
        or None,
        kernel_name=(meta.get("kernelspec") or {}).get("name") or "python3",
    )
