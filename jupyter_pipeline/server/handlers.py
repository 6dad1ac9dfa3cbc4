"""Thin REST handlers over :class:`~jupyter_pipeline.server.service.PipelineService`.

Every verb is ``@tornado.web.authenticated`` and ``@authorized`` (resource
``jupyter_pipeline``); mutating verbs get jupyter-server's XSRF check (token-authenticated
requests are exempt, as everywhere in Jupyter). One base handler turns errors into
``{"code", "message", "details"}``: the service's :class:`ApiError` and the core's bad-input
errors with their status, anything else a 500 whose traceback goes to the server log and
whose one-line message goes to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from pydantic import BaseModel, ValidationError
from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_pipeline.server.models import (
    AnalyzeRequest,
    CompileRequest,
    EventMessage,
    RunRequest,
)
from jupyter_pipeline.server.service import ApiError, domain_error

__all__ = ["default_handlers"]

M = TypeVar("M", bound=BaseModel)
AUTH_RESOURCE = "jupyter_pipeline"


class BaseHandler(APIHandler):
    """JSON in and out; domain errors mapped to statuses; work off the event loop."""

    auth_resource = AUTH_RESOURCE

    def initialize(self) -> None:
        super().initialize()
        self._timings: list[str] = []

    @property
    def state(self) -> Any:
        """The extension's state (:class:`~jupyter_pipeline.server.app.ServerState`)."""
        return self.settings["jupyter_pipeline"]

    @property
    def service(self) -> Any:
        return self.state.service

    def timing(self, name: str, since: float) -> float:
        """Record ``name`` as lasting from ``since`` (``perf_counter``) until now; return now.

        The answer carries them as a ``Server-Timing`` header: the browser shows them in its
        network panel and in Resource Timing, where bench/ui_tagging.py reads them to tell the
        server's share of a request from the page's.
        """
        now = time.perf_counter()
        self._timings.append(f"{name};dur={(now - since) * 1000:.1f}")
        return now

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) service call in the extension's worker threads."""
        loop = asyncio.get_running_loop()
        submitted = time.perf_counter()
        started: list[float] = []

        def work() -> Any:
            started.append(time.perf_counter())
            return fn(*args, **kwargs)

        result = await loop.run_in_executor(self.state.executor, work)
        self._timings.append(f"queue;dur={(started[0] - submitted) * 1000:.1f}")
        self.timing("work", started[0])
        return result

    def body(self, model: type[M]) -> M:
        """The request body validated as ``model`` (400 with pydantic's errors if not)."""
        since = time.perf_counter()
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "bad-request", f"the body is not JSON: {exc}") from None
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            first = errors[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(
                400, "bad-request", f"{where}: {first['msg']}", {"errors": errors}
            ) from None
        self.timing("parse", since)
        return parsed

    def send(self, model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> None:
        """Write a model (or plain JSON) as the answer."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        since = time.perf_counter()
        text = model.model_dump_json() if isinstance(model, BaseModel) else json.dumps(model)
        self.timing("encode", since)
        self.set_header("Server-Timing", ", ".join(self._timings))
        self.finish(text)

    def _handle_request_exception(self, e: BaseException) -> None:
        # Bad input from the core (a notebook with errors, a wrong parameter…) is the
        # client's to fix: answer it with its status instead of logging a 500.
        mapped = domain_error(e)
        if mapped is not None and not self._finished:
            self.log.info("jupyter-pipeline: %s %s: %s", mapped.status, mapped.code, mapped.message)
            self._write_api_error(mapped.status, mapped.code, mapped.message, mapped.details)
            return
        super()._handle_request_exception(e)  # type: ignore[misc]

    def _write_api_error(self, status: int, code: str, message: str, details: Any = None) -> None:
        if self._headers_written:
            return
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"code": code, "message": message, "details": details}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError):
            code = {400: "bad-request", 403: "forbidden", 404: "not-found", 405: "bad-method"}
            message = exc.log_message or exc.reason or self._reason
            if exc.log_message and exc.args[2:]:
                message = exc.log_message % exc.args[2:]
            self._write_api_error(status_code, code.get(status_code, "error"), message)
            return
        if status_code >= 500:
            # Tornado has logged the traceback; the client gets one line.
            first = str(exc).strip().splitlines()[:1] if exc is not None else []
            what = f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__
            if exc is None:
                what = self._reason
            self._write_api_error(
                status_code,
                "internal-error",
                f"internal error in jupyter-pipeline ({what}); the server log has the details",
            )
            return
        self._write_api_error(status_code, "error", self._reason)


class InfoHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Version handshake and configured targets."""
        self.send(await self.call(self.service.info))


class AnalyzeHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """The pipeline model and the run plan of a notebook (path or unsaved JSON)."""
        req = self.body(AnalyzeRequest)
        self.send(await self.call(self.service.analyze, req))


class CompileHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        """The KFP pipeline YAML, as a download."""
        req = self.body(CompileRequest)
        name, data = await self.call(self.service.compile, req)
        self.set_header("Content-Disposition", f'attachment; filename="{name}"')
        self.finish(data, set_content_type="application/x-yaml")


class RunsHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Runs, newest first (``?notebook=&limit=&before=``)."""
        try:
            limit = int(self.get_argument("limit", "50"))
            before_arg = self.get_argument("before", None)
            before = float(before_arg) if before_arg else None
        except ValueError:
            raise ApiError(400, "bad-request", "limit and before must be numbers") from None
        cursor = self.state.hub.store.last_event()
        self.send(
            await self.call(
                self.service.list_runs,
                notebook=self.get_argument("notebook", None),
                limit=limit,
                before=before,
                cursor=cursor,
            )
        )

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Start a run in its own runner process; 202 with its id."""
        req = self.body(RunRequest)
        created = await self.call(self.service.start_run, req)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + created.id)
        self.send(created, status=202)


class RunHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """One run with its steps."""
        self.send(await self.call(self.service.get_run, run_id))

    @web.authenticated
    @authorized
    async def delete(self, run_id: str) -> None:
        """Cancel a run; 200 once it is cancelled, 202 if it is still stopping."""
        run = await self.call(self.service.cancel, run_id)
        run = await self.call(self.service.wait_finished, run.id, self.state.cancel_wait)
        self.send(self.service.run_info(run), status=200 if run.state.finished else 202)


class StepLogHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str, step: str) -> None:
        """The step's log from byte ``offset`` and the offset to ask for next."""
        try:
            offset = int(self.get_argument("offset", "0"))
        except ValueError:
            raise ApiError(400, "bad-request", "offset must be a whole number") from None
        self.send(await self.call(self.service.log, run_id, step, offset))


class StepNotebookHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str, step: str) -> None:
        """The executed step notebook (nbformat JSON)."""
        self.send(await self.call(self.service.step_notebook, run_id, step))


class RunNotebookHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        """The merged executed notebook (nbformat JSON)."""
        self.send(await self.call(self.service.merged_notebook, run_id))


class OpenAPIHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The OpenAPI document of this API, generated from the pydantic models."""
        from jupyter_pipeline.server.openapi import openapi

        self.send(openapi())


class EventsHandler(BaseHandler):
    """Server-Sent Events: every run and step change, resumable by ``Last-Event-ID``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Stream events; ``?after=SEQ`` or ``Last-Event-ID`` resumes after that event."""
        raw = self.request.headers.get("Last-Event-ID") or self.get_argument("after", None)
        try:
            after = int(raw) if raw not in (None, "") else None
        except ValueError:
            raise ApiError(
                400, "bad-request", "after / Last-Event-ID must be an event seq"
            ) from None
        hub = self.state.hub
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        queue = self._queue = hub.subscribe()
        try:
            # retry: how soon EventSource reconnects; the first comment opens the stream.
            self.write(f"retry: 1000\n: jupyter-pipeline events from {hub.cursor}\n\n")
            backlog = hub.replay(after) if after is not None else []
            for message in backlog:
                self.write(_sse(message))
            await self.flush()
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), self.state.keepalive)
                except asyncio.TimeoutError:
                    self.write(": keepalive\n\n")  # also how a closed connection is noticed
                    await self.flush()
                    continue
                if message is None:
                    break
                self.write(_sse(message))
                while not queue.empty():  # a burst goes out in one write
                    more = queue.get_nowait()
                    if more is None:
                        break
                    self.write(_sse(more))
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            hub.unsubscribe(queue)
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                await self.finish()

    _queue: Any = None

    def on_connection_close(self) -> None:
        # Wake the loop above (it is waiting on its queue) so it notices and unsubscribes.
        super().on_connection_close()
        if self._queue is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)


def _sse(message: EventMessage) -> str:
    return f"id: {message.seq}\ndata: {message.model_dump_json()}\n\n"


def default_handlers() -> list[tuple[str, type[BaseHandler]]]:
    """Routes under ``/jupyter-pipeline/`` (the server prefixes its base_url)."""
    run = r"(?P<run_id>[A-Za-z0-9]+)"
    step = r"(?P<step>[A-Za-z0-9_.-]+)"
    base = "/jupyter-pipeline"
    return [
        (f"{base}/info", InfoHandler),
        (f"{base}/analyze", AnalyzeHandler),
        (f"{base}/compile", CompileHandler),
        (f"{base}/runs", RunsHandler),
        (f"{base}/runs/{run}", RunHandler),
        (f"{base}/runs/{run}/notebook", RunNotebookHandler),
        (f"{base}/runs/{run}/steps/{step}/log", StepLogHandler),
        (f"{base}/runs/{run}/steps/{step}/notebook", StepNotebookHandler),
        (f"{base}/events", EventsHandler),
        (f"{base}/openapi.json", OpenAPIHandler),
    ]
