"""The server extension's REST API against a real Jupyter server (pytest-jupyter's
``jp_serverapp``/``jp_fetch``): info, analyze, compile, security and errors.

Runs, cancel, logs and events (real runner processes) are in test_server_runs.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from helpers import nb
from tornado.httpclient import HTTPClientError

from jupyter_pipeline import __version__


def _nb(second: str = "b = a + 1\nprint('b is', b)"):
    return nb(
        ("n = 1", ["pipeline-parameters"]),
        ("a = n * 10", ["step:first"]),
        (second, ["step:second"]),
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "runs.sqlite"


class BrokenLauncher:
    """A `local` launcher with a bug, swapped in through the `local_runner_class` trait."""

    built = 0

    def __init__(self, store, **settings):
        BrokenLauncher.built += 1
        self.settings = settings

    def start(self, *args, **kwargs):
        raise RuntimeError("launcher exploded\nsecond line")

    def cancel(self, run_id):
        raise AssertionError("not reached")


@pytest.fixture
def launcher_class() -> type | None:
    return None


@pytest.fixture
def jp_server_config(store_path: Path, launcher_class) -> dict:
    app: dict = {"store_path": str(store_path)}
    if launcher_class is not None:
        app["local_runner_class"] = launcher_class
        app["max_parallel"] = 3
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_pipeline.server": True}},
        "PipelineApp": app,
    }


async def call(jp_fetch, *parts: str, body=None, method: str | None = None, **kw):
    """(status, JSON body) of a request; errors are answers here, not exceptions."""
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)
    resp = await jp_fetch(
        "jupyter-pipeline",
        *parts,
        method=method or ("POST" if body is not None else "GET"),
        body=body,
        raise_error=False,
        **kw,
    )
    text = resp.body.decode() if resp.body else ""
    try:
        return resp.code, json.loads(text) if text else None
    except ValueError:
        return resp.code, text


async def test_info_is_the_version_handshake(jp_fetch):
    status, info = await call(jp_fetch, "info")
    assert status == 200
    assert info["version"] == __version__
    assert info["engine_version"].startswith(__version__ + "/")
    assert info["api_version"] == 1
    assert info["default_target"] == "local"
    assert info["targets"][0] == "local"
    assert ("kfp" in info["targets"]) == (info["kfp_version"] is not None)


async def test_analyze_a_path_and_unsaved_content(jp_fetch, jp_root_dir):
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    status, out = await call(jp_fetch, "analyze", body={"path": "work.ipynb"})
    assert status == 200
    assert [s["name"] for s in out["pipeline"]["steps"]] == ["first", "second"]
    assert out["pipeline"]["edges"][0]["variables"] == ["a"]
    assert out["plan"] == [
        {"step": "first", "action": "will run", "reason": "never run", "run": None},
        {
            "step": "second",
            "action": "will run",
            "reason": "upstream step first will run",
            "run": None,
        },
    ]
    # The editor's unsaved content: analyzed as sent, nothing written.
    unsaved = json.loads(nbformat.writes(_nb("c = a * 2")))
    before = sorted(os.listdir(jp_root_dir))
    status, out = await call(jp_fetch, "analyze", body={"notebook": unsaved, "path": "work.ipynb"})
    assert status == 200
    assert out["pipeline"]["steps"][1]["outputs"] == []
    assert "c = a * 2" in json.dumps(unsaved)
    assert sorted(os.listdir(jp_root_dir)) == before


async def test_analyze_answer_carries_server_timing(jp_fetch, jp_root_dir):
    # The page's Resource Timing reads these (bench/ui_tagging.py): the server's share of a
    # request, split into parsing the body, waiting for a worker thread, the work and encoding.
    nbformat.write(_nb(), str(jp_root_dir / "timed.ipynb"))
    resp = await jp_fetch(
        "jupyter-pipeline", "analyze", method="POST", body=json.dumps({"path": "timed.ipynb"})
    )
    assert resp.code == 200
    entries = dict(
        (name, float(dur))
        for name, dur in re.findall(r"([\w-]+);dur=([\d.]+)", resp.headers["Server-Timing"])
    )
    assert list(entries) == ["parse", "queue", "work", "encode"]
    assert entries["work"] > 0


async def test_analyze_with_error_diagnostics_is_200_and_headings_split(jp_fetch, jp_root_dir):
    bad = nb(("x = 1", ["step:a"]), ("print(y_typo)", ["step:b"]))
    status, out = await call(
        jp_fetch, "analyze", body={"notebook": json.loads(nbformat.writes(bad))}
    )
    assert status == 200
    errors = [d for d in out["pipeline"]["diagnostics"] if d["severity"] == "error"]
    assert errors[0]["code"] == "undefined-name" and errors[0]["cell"] == 1
    assert out["plan"] == []  # it cannot run, so there is no plan
    split = nb("# Load", "x = 1", "# Train", "y = x + 1")
    split.cells[0].cell_type = "markdown"
    split.cells[2].cell_type = "markdown"
    for c in (split.cells[0], split.cells[2]):
        c.pop("outputs", None)
        c.pop("execution_count", None)
    status, out = await call(
        jp_fetch,
        "analyze",
        body={"notebook": json.loads(nbformat.writes(split)), "split": "headings"},
    )
    assert status == 200
    assert [s["name"] for s in out["pipeline"]["steps"]] == ["load", "train"]


@pytest.mark.parametrize(
    "path",
    ["../outside.ipynb", "sub/../../outside.ipynb", "/etc/passwd", "link.ipynb", "nope.ipynb"],
)
async def test_paths_outside_the_root_are_404_and_never_read(jp_fetch, jp_root_dir, path):
    outside = jp_root_dir.parent / "outside.ipynb"
    nbformat.write(_nb(), str(outside))
    (jp_root_dir / "sub").mkdir()
    os.symlink(outside, jp_root_dir / "link.ipynb")  # a symlink pointing out of the root
    for endpoint in ("analyze", "compile", "runs"):
        status, out = await call(jp_fetch, endpoint, body={"path": path})
        assert status == 404, (endpoint, out)
        assert out["code"] == "not-found"
        assert "outside" not in out["message"] or path.endswith("outside.ipynb")
    # Runs of a notebook deleted since are still listed; outside the root, nothing is.
    status, out = await call(jp_fetch, "runs", params={"notebook": path})
    assert status == (200 if path == "nope.ipynb" else 404)


async def test_bad_requests_are_400_with_code_and_message(jp_fetch, jp_root_dir):
    status, out = await call(jp_fetch, "analyze", body="{not json")
    assert status == 400 and out["code"] == "bad-request"
    status, out = await call(jp_fetch, "analyze", body={})
    assert status == 400 and "give `path`" in out["message"]
    status, out = await call(jp_fetch, "analyze", body={"path": "x.ipynb", "split": "pages"})
    assert status == 400 and out["message"].startswith("split:")
    status, out = await call(jp_fetch, "analyze", body={"notebook": {"cells": "no"}})
    assert status == 400 and out["code"] == "invalid-notebook"
    assert "not a valid notebook" in out["message"]
    (jp_root_dir / "broken.ipynb").write_text("{")
    status, out = await call(jp_fetch, "analyze", body={"path": "broken.ipynb"})
    assert status == 400 and out["code"] == "invalid-notebook"
    assert "broken.ipynb" in out["message"]


async def test_compile_is_a_yaml_download_and_refuses_errors(jp_fetch, jp_root_dir):
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    resp = await jp_fetch(
        "jupyter-pipeline", "compile", method="POST", body=json.dumps({"path": "work.ipynb"})
    )
    assert resp.headers["Content-Type"] == "application/x-yaml"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="work.yaml"'
    spec = yaml.safe_load(resp.body)
    assert spec["pipelineInfo"]["name"] == "work"
    assert set(spec["root"]["dag"]["tasks"]) == {"first", "second"}
    bad = nb(("x = 1", ["step:a"]), ("print(y_typo)", ["step:b"]))
    status, out = await call(
        jp_fetch, "compile", body={"notebook": json.loads(nbformat.writes(bad))}
    )
    assert status == 400 and out["code"] == "invalid-notebook"
    assert [d["code"] for d in out["details"]["diagnostics"]] == ["undefined-name"]


async def test_every_endpoint_refuses_without_a_token(jp_fetch, jp_root_dir):
    for method, parts, body in [
        ("GET", ("info",), None),
        ("POST", ("analyze",), "{}"),
        ("POST", ("compile",), "{}"),
        ("GET", ("runs",), None),
        ("POST", ("runs",), "{}"),
        ("GET", ("runs", "abc"), None),
        ("DELETE", ("runs", "abc"), None),
        ("GET", ("runs", "abc", "notebook"), None),
        ("GET", ("runs", "abc", "steps", "s", "log"), None),
        ("GET", ("runs", "abc", "steps", "s", "notebook"), None),
        ("GET", ("events",), None),
        ("GET", ("openapi.json",), None),
    ]:
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(
                "jupyter-pipeline", *parts, method=method, body=body, headers={"Authorization": ""}
            )
        assert err.value.code == 403, (method, parts)
        assert json.loads(err.value.response.body)["code"] == "forbidden"


async def test_cookie_authenticated_post_needs_the_xsrf_token(jp_fetch, jp_root_dir):
    """As jupyter-server does it: a login cookie alone cannot POST; with the XSRF token it can."""
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    first = await jp_fetch("jupyter-pipeline", "info")  # token-authenticated: sets the cookie
    login = "; ".join(c.split(";", 1)[0] for c in first.headers.get_list("Set-Cookie"))
    assert login.startswith("username-")
    body = json.dumps({"path": "work.ipynb"})
    no_token = {"Authorization": ""}
    status, _ = await call(jp_fetch, "info", headers={**no_token, "Cookie": login})
    assert status == 200  # reading needs only the login cookie
    resp = await jp_fetch(
        "jupyter-pipeline",
        "analyze",
        method="POST",
        body=body,
        headers={**no_token, "Cookie": login},
        raise_error=False,
    )
    assert resp.code == 403
    assert "_xsrf" in json.loads(resp.body)["message"]
    xsrf = "0123456789abcdef"
    resp = await jp_fetch(
        "jupyter-pipeline",
        "analyze",
        method="POST",
        body=body,
        headers={**no_token, "Cookie": f"{login}; _xsrf={xsrf}", "X-XSRFToken": xsrf},
        raise_error=False,
    )
    assert resp.code == 200, resp.body


async def test_openapi_document_describes_every_route(jp_fetch):
    status, doc = await call(jp_fetch, "openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/jupyter-pipeline/info",
        "/jupyter-pipeline/analyze",
        "/jupyter-pipeline/compile",
        "/jupyter-pipeline/runs",
        "/jupyter-pipeline/runs/{run_id}",
        "/jupyter-pipeline/runs/{run_id}/notebook",
        "/jupyter-pipeline/runs/{run_id}/steps/{step}/log",
        "/jupyter-pipeline/runs/{run_id}/steps/{step}/notebook",
        "/jupyter-pipeline/events",
        "/jupyter-pipeline/openapi.json",
    }
    schemas = doc["components"]["schemas"]
    assert schemas["RunState"]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cached",
        "skipped",
        "cancelled",
    ]
    assert set(schemas["StepInfo"]["properties"]) >= {
        "name",
        "state",
        "started",
        "finished",
        "attempts",
        "cached",
        "error",
        "error_cell",
        "outputs",
    }
    # Every reference resolves.
    refs = {r.rsplit("/", 1)[1] for r in _refs(doc)}
    assert refs <= set(schemas)


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


@pytest.mark.parametrize("launcher_class", [BrokenLauncher])
async def test_a_bug_is_a_500_with_one_line_and_the_traceback_logged(
    jp_fetch, jp_root_dir, jp_serverapp, caplog
):
    """The launcher is swapped through the `local_runner_class` Type trait (built once)."""
    assert BrokenLauncher.built == 1
    app = jp_serverapp.web_app.settings["jupyter_pipeline"]
    assert app.service.launchers["local"].settings == {"max_parallel": 3, "cache": True}
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    status, out = await call(jp_fetch, "runs", body={"path": "work.ipynb"})
    assert status == 500
    assert out["code"] == "internal-error"
    assert "RuntimeError: launcher exploded" in out["message"]
    assert "\n" not in out["message"] and "Traceback" not in out["message"]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "Traceback" in logged or any(r.exc_info for r in caplog.records)
    assert BrokenLauncher.built == 1  # built once at start-up, not per request
