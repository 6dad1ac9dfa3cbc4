"""The OpenAPI 3.1 document of the REST API, generated from the pydantic models.

Served at ``/jupyter-pipeline/openapi.json``; ``scripts/gen_ts_types.py`` turns its schemas
into the lab extension's TypeScript types. Paths are relative to the server's base URL.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from jupyter_pipeline import __version__
from jupyter_pipeline.server import models as m

__all__ = ["SCHEMA_MODELS", "component_schemas", "openapi"]

# Every model on the wire, requests and responses (their nested models come along).
SCHEMA_MODELS: list[type[BaseModel]] = [
    m.ErrorResponse,
    m.Info,
    m.AnalyzeRequest,
    m.AnalyzeResponse,
    m.CompileRequest,
    m.RunRequest,
    m.RunCreated,
    m.RunInfo,
    m.RunList,
    m.LogChunk,
    m.EventMessage,
]


def component_schemas() -> dict[str, Any]:
    """JSON schemas of every wire model (``#/components/schemas/<Name>`` references)."""
    _, top = models_json_schema(
        [(model, "validation") for model in SCHEMA_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    return dict(sorted(top.get("$defs", {}).items()))


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_NOTEBOOK_JSON = {
    "description": "nbformat 4 notebook JSON",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Invalid input (details carry the diagnostics or validation errors)",
        403: "Not authenticated or not authorized (resource `jupyter_pipeline`)",
        404: "Unknown run, step, or notebook (or a path outside the server root)",
        409: "Conflict (e.g. cancelling a finished run)",
        500: "A bug: one line here, the traceback in the server log",
    }
    return {str(c): _json("ErrorResponse", words[c]) for c in (*codes, 403, 500)}


def _op(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    status = extra.pop("status", "200")
    return {"summary": summary, "responses": {status: ok, **_errors(*errors)}, **extra}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


_RUN_ID = _param("run_id", "path", {"type": "string"}, "Run id")
_STEP = _param("step", "path", {"type": "string"}, "Step name")


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    """The OpenAPI document (cached: the models do not change while the server runs)."""
    paths: dict[str, Any] = {
        "/jupyter-pipeline/info": {
            "get": _op("Version handshake and configured targets", _json("Info", "Info"))
        },
        "/jupyter-pipeline/analyze": {
            "post": _op(
                "Analyze a notebook (path or unsaved JSON): the pipeline and the run plan",
                _json("AnalyzeResponse", "Pipeline (with diagnostics, errors included) and plan"),
                400,
                404,
                requestBody=_body("AnalyzeRequest"),
            )
        },
        "/jupyter-pipeline/compile": {
            "post": _op(
                "Compile to a Kubeflow Pipelines v2 YAML (a download)",
                {
                    "description": "The pipeline YAML",
                    "content": {"application/x-yaml": {"schema": {"type": "string"}}},
                },
                400,
                404,
                requestBody=_body("CompileRequest"),
            )
        },
        "/jupyter-pipeline/runs": {
            "get": _op(
                "Runs, newest first",
                _json("RunList", "Runs"),
                400,
                parameters=[
                    _param("notebook", "query", {"type": "string"}, "Only runs of this notebook"),
                    _param("limit", "query", {"type": "integer", "default": 50}, "At most"),
                    _param("before", "query", {"type": "number"}, "Created before (paging)"),
                ],
            ),
            "post": _op(
                "Start a run in its own runner process",
                _json("RunCreated", "Recorded and started"),
                400,
                404,
                requestBody=_body("RunRequest"),
                status="202",
            ),
        },
        "/jupyter-pipeline/runs/{run_id}": {
            "get": _op(
                "One run and its steps", _json("RunInfo", "The run"), 404, parameters=[_RUN_ID]
            ),
            "delete": _op(
                "Cancel a run (200 once cancelled, 202 while it is still stopping)",
                _json("RunInfo", "The run"),
                404,
                409,
                parameters=[_RUN_ID],
            ),
        },
        "/jupyter-pipeline/runs/{run_id}/notebook": {
            "get": _op("The merged executed notebook", _NOTEBOOK_JSON, 404, parameters=[_RUN_ID])
        },
        "/jupyter-pipeline/runs/{run_id}/steps/{step}/log": {
            "get": _op(
                "A step's log from a byte offset (tailing)",
                _json("LogChunk", "The log from `offset`"),
                400,
                404,
                parameters=[
                    _RUN_ID,
                    _STEP,
                    _param("offset", "query", {"type": "integer", "default": 0}, "Byte offset"),
                ],
            )
        },
        "/jupyter-pipeline/runs/{run_id}/steps/{step}/notebook": {
            "get": _op(
                "The executed step notebook", _NOTEBOOK_JSON, 404, parameters=[_RUN_ID, _STEP]
            )
        },
        "/jupyter-pipeline/events": {
            "get": _op(
                "Server-Sent Events: every run and step change. Each message's `data` is an "
                "EventMessage and its `id` the event's seq; resume with `Last-Event-ID` (sent "
                "by EventSource on reconnect) or `?after=SEQ` (e.g. RunList.cursor).",
                {
                    "description": "text/event-stream of EventMessage",
                    "content": {"text/event-stream": {"schema": _ref("EventMessage")}},
                },
                400,
                parameters=[_param("after", "query", {"type": "integer"}, "Resume after this seq")],
            )
        },
        "/jupyter-pipeline/openapi.json": {
            "get": _op(
                "This document",
                {"description": "OpenAPI 3.1", "content": {"application/json": {}}},
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter-pipeline server API",
            "version": f"{__version__} (api {m.API_VERSION})",
            "description": "REST + event API of the jupyter-pipeline server extension. Paths "
            "are under the Jupyter server's base URL; every request is authenticated (token "
            "or cookie + XSRF header for POST/DELETE) and authorized on resource "
            "`jupyter_pipeline`.",
        },
        "paths": paths,
        "components": {"schemas": component_schemas()},
    }
