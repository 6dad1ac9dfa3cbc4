"""``verify``: run the notebook straight through and as a pipeline; compare cell by cell.

The one promise, checked on the user's own notebook: the straight run is papermill's, the
pipeline run is the local runner's merged notebook. Skip-tagged cells are left out of the
comparison: the pipeline does not run them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jupyter_pipeline.cli import EXIT_FAILURE, EXIT_OK, UsageError
from jupyter_pipeline.cli.common import _check_kernel, _open_store, analyze_or_stop, source_language
from jupyter_pipeline.cli.params import _resolve_params
from jupyter_pipeline.cli.run_display import _print_failures, _Progress


def cmd_verify(args: argparse.Namespace) -> int:
    """``jupyter-pipeline verify``: straight papermill run vs pipeline, cell by cell."""
    import tempfile

    import nbformat
    import papermill

    from jupyter_pipeline.notebook import parse_notebook
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
        # Skip-tagged cells run only in the straight run: nothing to compare them with.
        skipped = parse_notebook(source, str(nb_path), split=args.split).role_cells("skip")
        diffs = compare_notebooks(
            nbformat.read(str(straight), as_version=4),
            nbformat.read(str(merged), as_version=4),
            source,
            stderr=args.stderr,
            images=args.images,
            skip=skipped,
        )
        step_of = {c: s.name for s in pipeline.steps for c in s.cells}
        n_code = sum(1 for c in source.cells if c.cell_type == "code") - len(skipped)
        if skipped:
            cells = ", ".join(str(c) for c in skipped)
            print(
                f"left out of the comparison: {len(skipped)} skip-tagged cell(s) ({cells}), "
                "which the pipeline does not run"
            )
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
