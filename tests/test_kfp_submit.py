"""Submit, watch, cancel and schedule through ``kfp.Client`` — against a STAND-IN for a cluster.

No Kubeflow Pipelines cluster can run on this machine, so these tests start
:class:`tests.kfp_standin.KfpStandIn`, a small HTTP server on 127.0.0.1 speaking the KFP
v2beta1 REST API (healthz, experiments, runs create/get/terminate, recurring runs). It
records every request, so the tests assert what ``kfp.Client`` really sent — the compiled
pipeline spec, the parameters, the cron — and it advances task states over polls so the
watcher's mapping onto the run store is exercised. It does not execute anything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.compile import CompileError, KfpConfig, compile_pipeline
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.base import ParameterError
from jupyter_pipeline.runners.kfp import KfpError, KfpRunner, cron_expression, map_state
from jupyter_pipeline.store import RunStore
from tests.kfp_standin import KfpStandIn

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "tests" / "data" / "compile" / "kale_linear.ipynb"


@pytest.fixture(scope="module")
def pipeline():
    return analyze_notebook(NB)


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs.db") as s:
        yield s


@pytest.fixture
def cluster():
    with KfpStandIn() as standin:
        yield standin


def runner_for(url, store, **kw):
    kw.setdefault("config", KfpConfig())
    return KfpRunner(url, store=store, poll_interval=0, timeout=5, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_submit_sends_the_compiled_spec_parameters_experiment_and_name(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    run = runner.submit(pipeline, NB, {"n": 4}, run_name="nightly", experiment="team-exp")

    (created,) = cluster.sent("POST", "/apis/v2beta1/runs")
    body = created["body"]
    assert body["display_name"] == "nightly"
    # All parameters, overrides applied and typed (slope stays a float).
    assert body["runtime_config"]["parameters"] == {"n": 4, "slope": 2.0, "label": "run"}
    assert body["pipeline_spec"] == compile_pipeline(pipeline, NB, config=KfpConfig())
    (exp,) = cluster.sent("POST", "/apis/v2beta1/experiments")
    assert exp["body"]["display_name"] == "team-exp"
    assert body["experiment_id"] == cluster.experiments[body["experiment_id"]]["experiment_id"]
    assert cluster.sent("GET", "/apis/v2beta1/healthz")

    stored = store.get_run(run.id)
    assert stored.backend == "kfp"
    assert stored.external_id in cluster.runs
    assert stored.url == f"{cluster.url}/#/runs/details/{stored.external_id}"
    assert stored.parameters == {"n": 4, "slope": 2.0, "label": "run"}
    assert [s.step for s in stored.steps] == [s.name for s in pipeline.steps]
    assert all(s.state is RunState.queued for s in stored.steps)

    # The notebook's experiment (Kale metadata) is the default; an existing one is reused.
    runner.submit(pipeline, NB)
    (_, demo) = cluster.sent("POST", "/apis/v2beta1/experiments")
    assert demo["body"]["display_name"] == "demo"
    second = cluster.sent("POST", "/apis/v2beta1/runs")[1]["body"]
    assert second["experiment_id"] != body["experiment_id"]
    runner.submit(pipeline, NB, experiment="team-exp")
    assert len(cluster.sent("POST", "/apis/v2beta1/experiments")) == 2


def test_bad_parameter_is_refused_before_anything_is_sent(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    with pytest.raises(ParameterError, match="unknown parameter 'zz'"):
        runner.submit(pipeline, NB, {"zz": 1})
    with pytest.raises(ParameterError, match="parameter n is int"):
        runner.submit(pipeline, NB, {"n": "many"})
    assert not cluster.sent("POST", "/apis/v2beta1/runs")


def test_watch_maps_task_states_onto_the_run_store(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    run = runner.submit(pipeline, NB)
    seen: list[tuple[str | None, str]] = []
    running_together: set[frozenset[str]] = set()

    def on_event(event):
        if event.kind == "step":
            state = next(s.state for s in event.run.steps if s.step == event.step)
            seen.append((event.step, state.value))
            running = frozenset(s.step for s in event.run.steps if s.state is RunState.running)
            if len(running) > 1:
                running_together.add(running)
        else:
            seen.append((None, event.run.state.value))

    final = runner.watch(run.id, on_event)
    assert final.state is RunState.succeeded
    assert final.finished is not None and final.started is not None
    for step in final.steps:
        assert step.state is RunState.succeeded
        assert step.started is not None and step.finished is not None
        assert step.external_id  # the KFP task id
        states = [s for name, s in seen if name == step.step]
        assert states[-1] == "succeeded"
        assert "running" in states
    # The two branches after `load` ran at the same time on the "cluster".
    assert frozenset({"features", "summary"}) in running_together
    assert seen[-1] == (None, "succeeded")
    assert len(cluster.sent("GET", f"/apis/v2beta1/runs/{final.external_id}")) > 5


def test_failed_task_fails_the_run_and_skips_what_never_started(pipeline, store):
    with KfpStandIn(fail_task="train") as cluster:
        runner = runner_for(cluster.url, store)
        run = runner.watch(runner.submit(pipeline, NB).id)
    steps = {s.step: s for s in run.steps}
    assert run.state is RunState.failed
    assert steps["train"].state is RunState.failed
    assert "task train failed" in steps["train"].error
    assert steps["load"].state is RunState.succeeded
    assert steps["evaluate"].state is RunState.skipped
    assert steps["pipeline-metrics"].state is RunState.skipped


def test_cancel_terminates_the_kfp_run(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    run = runner.submit(pipeline, NB)
    runner.refresh(run.id)
    # A runner built later (another process) finds the host from the run's UI link.
    other = KfpRunner(store=store, config=KfpConfig(), poll_interval=0)
    assert other.cancel(store.get_run(run.id)) is True
    (terminate,) = cluster.sent("POST", "/apis/v2beta1/runs/")
    assert terminate["path"] == f"/apis/v2beta1/runs/{run.external_id}:terminate"
    assert store.get_run(run.id).state is RunState.cancelled
    assert all(s.state.finished for s in store.get_run(run.id).steps)
    final = runner.refresh(run.id)  # the cluster agrees
    assert final.state is RunState.cancelled
    assert other.cancel(run.id) is False  # already finished: nothing sent
    assert len(cluster.sent("POST", "/apis/v2beta1/runs/")) == 1


def test_a_cancelled_run_stays_cancelled_while_kfp_is_still_canceling(pipeline, store):
    with KfpStandIn(auto_advance=False) as cluster:
        runner = runner_for(cluster.url, store)
        run = runner.submit(pipeline, NB)
        cluster.advance()
        cluster.advance()  # the first task runs
        assert runner.refresh(run.id).state is RunState.running
        # The server's DELETE cancels from another process; the watcher polls on.
        KfpRunner(cluster.url, store=store, config=KfpConfig()).cancel(run.id)
        assert cluster.runs[run.external_id].state == "CANCELING"  # its tasks still RUNNING
        polled = runner.refresh(run.id)
        assert polled.state is RunState.cancelled
        assert {s.state for s in polled.steps} == {RunState.cancelled}
        assert runner.watch(run.id).state is RunState.cancelled  # finished: it stops at once


def test_cancel_requested_in_the_store_is_acted_on_by_the_watcher(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    run = runner.submit(pipeline, NB)
    store.request_cancel(run.id)  # what `jupyter-pipeline cancel` does from another process
    final = runner.watch(run.id)
    assert final.state is RunState.cancelled
    assert cluster.sent("POST", f"/apis/v2beta1/runs/{run.external_id}:terminate")


def test_schedule_creates_a_recurring_run_with_the_cron(pipeline, store, cluster):
    runner = runner_for(cluster.url, store)
    rec = runner.schedule(pipeline, NB, "0 6 * * 1-5", {"label": "daily"}, name="daily fit")
    (sent,) = cluster.sent("POST", "/apis/v2beta1/recurringruns")
    body = sent["body"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * 1-5"
    assert body["display_name"] == "daily fit"
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"n": 6, "slope": 2.0, "label": "daily"}
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == pipeline.name
    assert rec["id"] in cluster.recurring_runs
    assert rec["cron"] == "0 0 6 * * 1-5"
    assert rec["url"] == f"{cluster.url}/#/recurringrun/details/{rec['id']}"
    with pytest.raises(KfpError, match="not a cron expression"):
        runner.schedule(pipeline, NB, "every day")


def test_unreachable_host_is_one_clear_error(pipeline, store):
    runner = runner_for(f"http://127.0.0.1:{free_port()}", store)
    with pytest.raises(KfpError, match=r"cannot reach KFP at http://127\.0\.0\.1:\d+"):
        runner.submit(pipeline, NB)
    assert store.list_runs() == []


def test_rejected_token_is_one_clear_error(pipeline, store):
    with KfpStandIn(token="s3cret") as cluster:
        with pytest.raises(KfpError, match=r"rejected the credentials \(HTTP 401\)"):
            runner_for(cluster.url, store, token="wrong").submit(pipeline, NB)
        run = runner_for(cluster.url, store, token="s3cret").submit(pipeline, NB)
        assert run.external_id in cluster.runs
        sent = cluster.sent("POST", "/apis/v2beta1/runs")[-1]
        assert sent["headers"]["authorization"] == "Bearer s3cret"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"v1_only": True, "version": "1.8.5"}, "is version 1.8.5 and has only the v1 API"),
        ({"version": "1.8.5"}, "is version 1.8.5; compiled pipelines need KFP 2.x"),
    ],
)
def test_incompatible_kfp_version_is_one_clear_error(pipeline, store, kwargs, message):
    with KfpStandIn(**kwargs) as cluster:
        with pytest.raises(KfpError, match=message):
            runner_for(cluster.url, store).submit(pipeline, NB)
        assert not cluster.sent("POST", "/apis/v2beta1/runs")


def test_state_mapping_and_cron():
    assert map_state("SUCCEEDED") is RunState.succeeded
    assert map_state("CANCELING") is RunState.running
    assert map_state("CANCELED") is RunState.cancelled
    assert map_state(None) is RunState.queued
    assert map_state("SKIPPED") is RunState.skipped
    assert cron_expression("*/5 * * * *") == "0 */5 * * * *"
    assert cron_expression("30 0 6 * * *") == "30 0 6 * * *"


# ---------------------------------------------------------------------------- CLI


def cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "JUPYTER_PIPELINE_KFP_CONFIG"):
        if not env or name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "jupyter_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        check=False,
    )


def test_cli_submit_watch_and_schedule(tmp_path):
    db = str(tmp_path / "runs.db")
    with KfpStandIn(token="tok") as cluster:
        proc = cli(
            "submit", str(NB), "--host", cluster.url, "-p", "n=3", "--experiment", "e1",
            "--run-name", "cli run", "--watch", "--poll", "0", "--store", db,
            env={"KF_PIPELINES_TOKEN": "tok"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "submitted run" in proc.stdout and "/#/runs/details/run-" in proc.stdout
        assert "  train: succeeded" in proc.stdout
        assert proc.stdout.strip().endswith("succeeded")
        body = cluster.sent("POST", "/apis/v2beta1/runs")[0]["body"]
        assert body["runtime_config"]["parameters"]["n"] == 3
        assert body["display_name"] == "cli run"
        with RunStore(db) as s:
            (run,) = s.list_runs()
            assert run.backend == "kfp" and run.state is RunState.succeeded

        proc = cli(
            "submit", str(NB), "--host", cluster.url, "--token", "tok", "--schedule",
            "15 2 * * *", "--store", db,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "scheduled recurring run rec-" in proc.stdout
        rec = cluster.sent("POST", "/apis/v2beta1/recurringruns")[0]["body"]
        assert rec["trigger"]["cron_schedule"]["cron"] == "0 15 2 * * *"


def test_cli_submit_failures_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    from jupyter_pipeline.cli import main

    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "JUPYTER_PIPELINE_KFP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    db = str(tmp_path / "runs.db")

    def run(*args):
        capsys.readouterr()
        code = main(["submit", str(NB), "--store", db, *args])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return code, err

    code, err = run("--host", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach KFP" in err
    with KfpStandIn(token="tok") as cluster:
        code, err = run("--host", cluster.url, "--token", "bad")
        assert code == 2 and "rejected the credentials" in err
        code, err = run("--host", cluster.url, "-p", "zz=1")
        assert code == 2 and "unknown parameter 'zz'" in err
    with KfpStandIn(v1_only=True, version="1.8.5") as cluster:
        code, err = run("--host", cluster.url)
        assert code == 2 and "only the v1 API" in err
    code, err = run()
    assert code == 2 and "no KFP host" in err


# ---------------------------------------------------------------------------- compile first


def _write(tmp_path, name, *cells):
    from tests.helpers import nb

    path = tmp_path / name
    import nbformat

    nbformat.write(nb(*cells), path)
    return path


def test_uncompilable_pipeline_never_reaches_the_cluster(tmp_path, store, cluster):
    """Compilation happens before the experiment is created: a bad notebook leaves nothing."""
    path = _write(tmp_path, "bad.ipynb", ("print(undefined_name)", ["step:one"]))
    bad = analyze_notebook(path)
    assert bad.errors
    runner = runner_for(cluster.url, store)
    with pytest.raises(CompileError):
        runner.submit(bad, path)
    with pytest.raises(CompileError):
        runner.schedule(bad, path, "0 6 * * *")
    assert cluster.requests == []  # not even a healthz: the cluster is contacted after compiling
    assert store.list_runs() == []


def test_cli_submit_of_an_uncompilable_notebook_creates_no_experiment(tmp_path, capsys):
    from jupyter_pipeline.cli import main

    db = str(tmp_path / "runs.db")
    # Analysis is clean; only the compiler can refuse this resource.
    path = _write(tmp_path, "limit.ipynb", ("a = 1", ["step:one", "limit:bogus:1"]))
    # An error diagnostic (undefined name) stops even earlier, at the analysis.
    diag = _write(tmp_path, "diag.ipynb", ("print(undefined_name)", ["step:one"]))
    with KfpStandIn() as standin:
        for extra in ([], ["--schedule", "0 6 * * *"]):
            capsys.readouterr()
            code = main(["submit", str(path), "--host", standin.url, "--store", db, *extra])
            err = capsys.readouterr().err
            assert code == 2, err
            assert "limit:bogus:1" in err and err.count("\n") == 1
            code = main(["submit", str(diag), "--host", standin.url, "--store", db, *extra])
            err = capsys.readouterr().err
            assert code == 2 and "undefined_name" in err and "fix them before" in err, err
        assert standin.sent("POST", "/apis/v2beta1/experiments") == []
        assert standin.requests == []


def test_compile_and_submit_read_and_analyze_the_notebook_once(tmp_path, capsys, monkeypatch):
    import nbformat

    import jupyter_pipeline.analysis as analysis
    from jupyter_pipeline.cli import main

    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "JUPYTER_PIPELINE_KFP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    counts = {"read": 0, "analyze": 0}
    reads, parse = nbformat.reads, analysis.parse_notebook

    def counting_reads(*a, **k):
        counts["read"] += 1
        return reads(*a, **k)

    def counting_parse(*a, **k):
        counts["analyze"] += 1
        return parse(*a, **k)

    monkeypatch.setattr(nbformat, "reads", counting_reads)
    monkeypatch.setattr(analysis, "parse_notebook", counting_parse)
    assert main(["compile", str(NB), "-o", str(tmp_path / "nb.yaml")]) == 0
    assert counts == {"read": 1, "analyze": 1}
    counts.update(read=0, analyze=0)
    with KfpStandIn() as standin:
        db = str(tmp_path / "runs.db")
        assert main(["submit", str(NB), "--host", standin.url, "--store", db]) == 0
        assert main(["submit", str(NB), "--host", standin.url, "--store", db,
                     "--schedule", "0 6 * * *"]) == 0  # fmt: skip
    assert counts == {"read": 2, "analyze": 2}


def test_steps_named_after_builtins_map_back_onto_their_steps(tmp_path, store, cluster):
    """Against the KFP REST stand-in: task states of `list`, `type`, `print` reach the store."""
    path = _write(
        tmp_path,
        "builtins.ipynb",
        ("x = [1, 2]", ["step:list"]),
        ("t = str(len(x))", ["step:type"]),
        ("print(t)", ["step:print"]),
    )
    pipeline = analyze_notebook(path)
    runner = runner_for(cluster.url, store)
    run = runner.watch(runner.submit(pipeline, path).id)
    assert run.state is RunState.succeeded
    assert {s.step: s.state for s in run.steps} == {
        "list": RunState.succeeded,
        "type": RunState.succeeded,
        "print": RunState.succeeded,
    }
    assert all(s.external_id for s in run.steps)


def test_runs_nobody_watches_are_refreshed_once_by_runs_show_and_prune(
    pipeline, tmp_path, capsys, monkeypatch
):
    """Against the KFP REST stand-in: a run submitted without --watch (or whose watcher
    died) is asked about once per listing, so it finishes in the store and can be pruned;
    with its host gone it reads ``unknown``, not ``running``."""
    import json
    import socket

    from jupyter_pipeline.cli import main
    from jupyter_pipeline.store import process_started

    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "JUPYTER_PIPELINE_KFP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    db = str(tmp_path / "runs.db")

    def cli_json(*args):
        capsys.readouterr()
        assert main([*args, "--store", db, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    def gets(cluster, run_ids):
        return sum(len(cluster.sent("GET", f"/apis/v2beta1/runs/{rid}")) for rid in run_ids)

    with KfpStandIn() as cluster:
        with RunStore(db) as s:
            unwatched = runner_for(cluster.url, s).submit(pipeline, NB)
            dead = runner_for(cluster.url, s).submit(pipeline, NB)
            watched = runner_for(cluster.url, s).submit(pipeline, NB)
            dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
            dead_pid.wait()
            s.update_run(dead.id, pid=dead_pid.pid, host=socket.gethostname())
            # A live watcher (this process) keeps its run: listings leave it to it.
            s.update_run(
                watched.id,
                pid=os.getpid(),
                pid_created=process_started(os.getpid()),
                host=socket.gethostname(),
            )
            stale = {unwatched.id: unwatched.external_id, dead.id: dead.external_id}
        for _ in range(40):
            before = gets(cluster, stale.values())
            runs = {r["id"]: r for r in cli_json("runs")}
            assert gets(cluster, stale.values()) == before + 2  # each asked once
            if all(runs[rid]["state"] == "succeeded" for rid in stale):
                break
        assert all(runs[rid]["state"] == "succeeded" for rid in stale), runs
        assert all(s["state"] == "succeeded" for rid in stale for s in runs[rid]["steps"])
        assert runs[watched.id]["state"] == "queued"
        assert not cluster.sent("GET", f"/apis/v2beta1/runs/{watched.external_id}")
        pruned = cli_json("runs", "--prune", "--keep", "0")
        assert sorted(pruned["runs"]) == sorted(stale) and pruned["active"] == [watched.id]
        with RunStore(db) as s:
            lost = runner_for(cluster.url, s).submit(pipeline, NB)
            s.update_run(watched.id, pid=dead_pid.pid, pid_created=None)  # its watcher died
    # The host is gone: the runs' states are unknown, not running; prune keeps them.
    runs = {r["id"]: r for r in cli_json("runs")}
    for rid in (lost.id, watched.id):
        assert runs[rid]["state"] == "unknown"
        assert "nobody watches it" in runs[rid]["error"]
    assert cli_json("show", lost.id)["state"] == "unknown"
    pruned = cli_json("runs", "--prune", "--keep", "0")
    assert pruned["runs"] == [] and set(pruned["unknown"]) == {lost.id, watched.id}
    capsys.readouterr()
    assert main(["show", lost.id, "--store", db]) == 0
    out = capsys.readouterr().out
    assert "unknown" in out and "running" not in out and "queued" not in out.splitlines()[0]


def test_the_servers_run_list_refreshes_runs_nobody_watches(pipeline, tmp_path, store):
    """Against the KFP REST stand-in: the API's run list asks KFP about an unwatched run."""
    from jupyter_pipeline.server.service import PipelineService

    service = PipelineService(store, tmp_path, {})
    with KfpStandIn() as cluster:
        run = runner_for(cluster.url, store).submit(pipeline, NB)
        (info,) = service.list_runs(notebook=None, limit=10, before=None, cursor=0).runs
        assert info.state is RunState.running  # the stand-in's first tick
        assert len(cluster.sent("GET", f"/apis/v2beta1/runs/{run.external_id}")) == 1
        # Asked at most every few seconds: a second listing right away does not ask again.
        service.list_runs(notebook=None, limit=10, before=None, cursor=0)
        assert len(cluster.sent("GET", f"/apis/v2beta1/runs/{run.external_id}")) == 1
    service._kfp_asked.clear()  # (as if the interval had passed)
    info = service.get_run(run.id)
    assert "nobody watches it" in (info.error or "")
