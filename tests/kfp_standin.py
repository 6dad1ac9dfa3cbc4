"""A stand-in for a Kubeflow Pipelines cluster: a tiny KFP v2beta1 REST server for tests.

No KFP backend can run on this machine (no container engine, no Kubernetes), so the
submit / monitor / cancel / schedule path is tested against this server instead. It is NOT
a KFP implementation: it speaks just enough of the v2beta1 REST API for ``kfp.Client`` —

- ``GET  /apis/v2beta1/healthz`` (and ``/apis/v1beta1/healthz`` when posing as KFP 1.x),
- ``GET/POST /apis/v2beta1/experiments`` and ``GET /apis/v2beta1/experiments/{id}``,
- ``POST /apis/v2beta1/runs``, ``GET /apis/v2beta1/runs/{id}``,
  ``POST /apis/v2beta1/runs/{id}:terminate``,
- ``POST /apis/v2beta1/recurringruns``, ``GET /apis/v2beta1/recurringruns/{id}`` —

and it RECORDS every request (method, path, query, headers, JSON body) so a test can assert
what ``kfp.Client`` actually sent: the compiled pipeline spec, the parameters, the cron.

A run does not execute anything. Each ``GET runs/{id}`` advances it one tick through the
DAG of the submitted spec (``root.dag.tasks`` and their ``dependentTasks``): ready tasks go
PENDING → RUNNING → SUCCEEDED, so a watcher sees task states change over polls, and
independent tasks run at the same time as they would on a cluster. With
``auto_advance=False`` polls do not advance runs: the test does, with :meth:`advance`, so it
can assert what a watcher shows in each state. ``fail_task`` makes one
task FAIL (the run fails, nothing after it starts). ``token`` makes every request without
``Authorization: Bearer <token>`` get 401. ``version`` is what healthz reports;
``v1_only=True`` poses as a KFP 1.x server that has no v2beta1 API.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["KfpStandIn", "Recorded"]

_EPOCH = "1970-01-01T00:00:00Z"


def _now() -> str:
    # Milliseconds, as KFP's API writes them: a task that runs under a second has a duration.
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Recorded(dict):
    """One recorded request: ``method``, ``path``, ``query``, ``headers``, ``body``."""


class _Run:
    def __init__(self, body: dict[str, Any], run_id: str, fail_task: str | None):
        self.body = body
        self.run_id = run_id
        self.created = _now()
        self.state = "PENDING"
        self.fail_task = fail_task
        spec = body.get("pipeline_spec") or {}
        # The client sends {"pipeline_spec": ..., "platform_spec": ...} when a platform spec
        # exists, else the bare pipeline spec.
        if "pipeline_spec" in spec and "root" not in spec:
            spec = spec["pipeline_spec"]
        self.spec = spec
        tasks = ((spec.get("root") or {}).get("dag") or {}).get("tasks") or {}
        self.deps = {name: list(t.get("dependentTasks") or []) for name, t in tasks.items()}
        self.display = {
            name: (t.get("taskInfo") or {}).get("name") or name for name, t in tasks.items()
        }
        self.tasks: dict[str, dict[str, Any]] = {}
        self.finished_at: str | None = None
        self.terminating = False

    def _task(self, name: str, state: str) -> dict[str, Any]:
        task = self.tasks.setdefault(
            name,
            {
                "run_id": self.run_id,
                "task_id": uuid.uuid4().hex,
                "display_name": self.display[name],
                "create_time": _now(),
                "start_time": _EPOCH,
                "end_time": _EPOCH,
                "state": "PENDING",
            },
        )
        task["state"] = state
        if state == "RUNNING":
            task["start_time"] = _now()
        if state in ("SUCCEEDED", "FAILED", "CANCELED"):
            task["end_time"] = _now()
            if task["start_time"] == _EPOCH:
                task["start_time"] = task["end_time"]
        if state == "FAILED":
            task["error"] = {"code": 2, "message": f"task {name} failed (stand-in)"}
        return task

    def tick(self) -> None:
        """Advance one step: finish running tasks, start pending ones, queue ready ones."""
        if self.state in ("SUCCEEDED", "FAILED", "CANCELED"):
            return
        if self.terminating:
            for name, task in self.tasks.items():
                if task["state"] in ("PENDING", "RUNNING"):
                    self._task(name, "CANCELED")
            self.state, self.finished_at = "CANCELED", _now()
            return
        self.state = "RUNNING"
        states = {n: t["state"] for n, t in self.tasks.items()}
        for name, state in states.items():
            if state == "RUNNING":
                self._task(name, "FAILED" if name == self.fail_task else "SUCCEEDED")
            elif state == "PENDING":
                self._task(name, "RUNNING")
        if any(t["state"] == "FAILED" for t in self.tasks.values()):
            self.state, self.finished_at = "FAILED", _now()
            return
        done = {n for n, t in self.tasks.items() if t["state"] == "SUCCEEDED"}
        for name, deps in self.deps.items():
            if name not in self.tasks and all(d in done for d in deps):
                self._task(name, "PENDING")
        if len(done) == len(self.deps):
            self.state, self.finished_at = "SUCCEEDED", _now()

    def to_json(self) -> dict[str, Any]:
        out = dict(self.body)
        out.update(
            run_id=self.run_id,
            state=self.state,
            created_at=self.created,
            scheduled_at=self.created,
            finished_at=self.finished_at or _EPOCH,
            storage_state="AVAILABLE",
        )
        root = {
            "run_id": self.run_id,
            "task_id": "root-" + self.run_id,
            # Real clusters also list the root DAG and driver nodes; runners must skip them.
            "display_name": "root",
            "create_time": self.created,
            "state": self.state,
        }
        out["run_details"] = {"task_details": [root, *self.tasks.values()]}
        return out


class KfpStandIn:
    """Start with ``with KfpStandIn() as kfp: kfp.url …``; see the module docstring.

    Args:
        token: Required bearer token (None: no auth).
        version: Version healthz reports.
        v1_only: Pose as KFP 1.x (no v2beta1 API at all).
        fail_task: Task (name in the spec) that fails when it runs.
        auto_advance: Each ``GET runs/{id}`` advances the run one tick (else :meth:`advance`).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        version: str = "2.5.0",
        v1_only: bool = False,
        fail_task: str | None = None,
        auto_advance: bool = True,
    ):
        self.auto_advance = auto_advance
        self.token = token
        self.version = version
        self.v1_only = v1_only
        self.fail_task = fail_task
        self.requests: list[Recorded] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, _Run] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> KfpStandIn:
        """Serve on a free port of 127.0.0.1 in a daemon thread."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                parts = urlsplit(self.path)
                record = Recorded(
                    method=method,
                    path=parts.path,
                    query={k: v[0] for k, v in parse_qs(parts.query).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with standin._lock:
                    standin.requests.append(record)
                    status, payload = standin._route(record)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KfpStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------
    def advance(self, run_id: str | None = None) -> dict[str, str]:
        """Advance a run (default: the latest) one tick; returns its state and its tasks'."""
        with self._lock:
            run = self.runs[run_id] if run_id else list(self.runs.values())[-1]
            run.tick()
            return {"run": run.state, **{n: t["state"] for n, t in run.tasks.items()}}

    def ui_url(self, run_id: str) -> str:
        """The KFP UI page of a run of this stand-in (what a real cluster's UI would show)."""
        return f"{self.url}/#/runs/details/{run_id}"

    def sent(self, method: str, path_prefix: str) -> list[Recorded]:
        """Recorded requests with this method whose path starts with ``path_prefix``."""
        return [
            r for r in self.requests if r["method"] == method and r["path"].startswith(path_prefix)
        ]

    # -- the API -------------------------------------------------------------------------
    def _route(self, req: Recorded) -> tuple[int, Any]:
        path, method = req["path"], req["method"]
        if self.token is not None and req["headers"].get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Unauthorized: bad or missing token", "code": 16}
        if path == "/apis/v1beta1/healthz" and method == "GET":
            return 200, {"commit_sha": "standin", "tag_name": self.version, "multi_user": False}
        if not path.startswith("/apis/v2beta1/") or self.v1_only:
            return 404, {"error": "Not Found", "code": 5}
        rest = path[len("/apis/v2beta1/") :]
        if rest == "healthz" and method == "GET":
            return 200, {"commit_sha": "standin", "tag_name": self.version, "multi_user": False}
        if rest == "experiments":
            return self._experiments(req)
        if rest.startswith("experiments/") and method == "GET":
            exp = self.experiments.get(rest.split("/", 1)[1])
            return (200, exp) if exp else (404, {"error": "experiment not found", "code": 5})
        if rest == "runs" and method == "POST":
            run_id = f"run-{next(self._ids)}"
            run = _Run(req["body"] or {}, run_id, self.fail_task)
            self.runs[run_id] = run
            return 200, run.to_json()
        if rest.startswith("runs/") and rest.endswith(":terminate") and method == "POST":
            run = self.runs.get(rest[len("runs/") : -len(":terminate")])
            if run is None:
                return 404, {"error": "run not found", "code": 5}
            run.terminating = True
            if run.state not in ("SUCCEEDED", "FAILED", "CANCELED"):
                run.state = "CANCELING"
            return 200, {}
        if rest.startswith("runs/") and method == "GET":
            run = self.runs.get(rest[len("runs/") :])
            if run is None:
                return 404, {"error": "run not found", "code": 5}
            if self.auto_advance:
                run.tick()
            return 200, run.to_json()
        if rest == "recurringruns" and method == "POST":
            body = dict(req["body"] or {})
            body.update(
                recurring_run_id=f"rec-{next(self._ids)}",
                status="ENABLED",
                created_at=_now(),
                updated_at=_now(),
            )
            self.recurring_runs[body["recurring_run_id"]] = body
            return 200, body
        if rest.startswith("recurringruns/") and method == "GET":
            rec = self.recurring_runs.get(rest.split("/", 1)[1])
            return (200, rec) if rec else (404, {"error": "recurring run not found", "code": 5})
        return 404, {"error": f"stand-in does not implement {method} {path}", "code": 12}

    def _experiments(self, req: Recorded) -> tuple[int, Any]:
        if req["method"] == "POST":
            body = dict(req["body"] or {})
            body.update(
                experiment_id=f"exp-{next(self._ids)}", created_at=_now(), storage_state="AVAILABLE"
            )
            self.experiments[body["experiment_id"]] = body
            return 200, body
        wanted = None
        if req["query"].get("filter"):
            for pred in json.loads(req["query"]["filter"]).get("predicates", []):
                if pred.get("key") in ("display_name", "name"):
                    wanted = pred.get("string_value") or pred.get("stringValue")
        found = [e for e in self.experiments.values() if wanted in (None, e.get("display_name"))]
        if not found:
            return 200, {}
        return 200, {"experiments": found, "total_size": len(found)}
