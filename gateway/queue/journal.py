"""The dispatcher's writes to the context store, in order, off the dispatching path.

Dispatching runs synchronously on the event loop (an agent must be rung the moment they are
free); each change is queued here and written by one task, in the order it happened. A store
failure is logged and the queue keeps serving: the calls matter more than their record.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.store import StoreError

log = logging.getLogger(__name__)


class QueueJournal:
    def __init__(self) -> None:
        self._writes: asyncio.Queue[Callable[[], Awaitable[object]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="queue-journal")

    def write(self, operation: Callable[[], Awaitable[object]]) -> None:
        self._writes.put_nowait(operation)

    async def flush(self) -> None:
        """Wait until every write queued so far is done."""
        done = asyncio.Event()

        async def mark() -> None:
            done.set()

        self.write(mark)
        await done.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._writes.put_nowait(None)
            await self._task
            self._task = None

    async def _run(self) -> None:
        while (operation := await self._writes.get()) is not None:
            try:
                await operation()
            except StoreError as exc:
                self.failures += 1
                log.error("queue: the context store refused a write, the queue goes on: %s", exc)
            except Exception:
                self.failures += 1
                log.exception("queue: a store write failed")
