"""The event stream's one server-wide loop: tails the run store's event log and fans each
event out to the subscribed clients.

Every process that changes a run (a detached runner, ``jupyter-pipeline run`` in a
terminal, a KFP watcher) appends to the store's event log in the same transaction as the
change (:meth:`~jupyter_pipeline.store.RunStore.events_after`). One asyncio task polls the
log (an indexed range read, every ``interval`` seconds, only while someone listens) and
hands each new event, with the run's current record, to every subscriber's queue; the SSE
handler writes its queue out. Reconnecting clients resume from their last ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from jupyter_pipeline.model import RunState
from jupyter_pipeline.server.models import EventMessage, RunInfo
from jupyter_pipeline.store import RunStore, StoreEvent

__all__ = ["EventHub"]

log = logging.getLogger(__name__)
_MAX_QUEUE = 10_000  # a client this far behind is dropped (it reconnects and resumes)


class EventHub:
    """Subscribers and the tailing loop.

    Args:
        store: A store connection of its own (the loop must not wait on the API's lock).
        run_info: Turns a run into its API shape.
        interval: Seconds between polls of the event log.
    """

    def __init__(self, store: RunStore, run_info: Callable[[Any], RunInfo], interval: float = 0.1):
        self.store = store
        self.run_info = run_info
        self.interval = interval
        self.subscribers: set[asyncio.Queue[EventMessage | None]] = set()
        self.cursor = store.last_event()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def messages(self, events: list[StoreEvent]) -> list[EventMessage]:
        """Store events → wire messages, each with its run's current record (read once)."""
        runs: dict[str, RunInfo | None] = {}
        out = []
        for ev in events:
            if ev.run_id not in runs:
                try:
                    runs[ev.run_id] = self.run_info(self.store.get_run(ev.run_id))
                except KeyError:  # deleted since
                    runs[ev.run_id] = None
            out.append(
                EventMessage(
                    seq=ev.seq,
                    time=ev.time,
                    kind=ev.kind,  # type: ignore[arg-type]
                    run_id=ev.run_id,
                    step=ev.step,
                    state=RunState(ev.state) if ev.state else None,
                    run=runs[ev.run_id],
                )
            )
        return out

    def replay(self, after: int) -> list[EventMessage]:
        """Every event after ``after`` up to the hub's cursor (a resuming client's backlog)."""
        out: list[EventMessage] = []
        while after < self.cursor:
            batch = [e for e in self.store.events_after(after, 1000) if e.seq <= self.cursor]
            if not batch:
                break
            out += self.messages(batch)
            after = batch[-1].seq
        return out

    def subscribe(self) -> asyncio.Queue[EventMessage | None]:
        """A queue that receives every event from now on (``None``: the hub stopped)."""
        queue: asyncio.Queue[EventMessage | None] = asyncio.Queue(maxsize=_MAX_QUEUE)
        if not self.subscribers:
            # The loop idled while nobody listened: catch up now, synchronously, so a replay
            # up to the cursor and the queue together hold every event exactly once.
            self.cursor = max(self.cursor, self.store.last_event())
        self.subscribers.add(queue)
        self._ensure_running()
        self._wake.set()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[EventMessage | None]) -> None:
        """Stop delivering to ``queue``."""
        self.subscribers.discard(queue)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def poll(self) -> list[EventMessage]:
        """Read the events after the cursor, advance it; returns their messages."""
        events = self.store.events_after(self.cursor)
        if not events:
            return []
        self.cursor = events[-1].seq
        return self.messages(events)

    async def _loop(self) -> None:
        while True:
            if not self.subscribers:
                # Nobody listens: stop polling until someone subscribes (subscribe() moves
                # the cursor on, so the newcomer gets no stale history).
                self._wake.clear()
                await self._wake.wait()
            try:
                messages = self.poll()
            except Exception:  # a locked or busy database: try again next round
                log.exception("jupyter-pipeline: reading the event log failed")
                messages = []
            for message in messages:
                for queue in list(self.subscribers):
                    try:
                        queue.put_nowait(message)
                    except asyncio.QueueFull:
                        self.subscribers.discard(queue)
                        with contextlib.suppress(asyncio.QueueFull):
                            queue.put_nowait(None)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop the loop and end every subscription."""
        for queue in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
