"""Runs the synchronous store on one worker thread, so the event loop never blocks on disk."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from gateway.store import Store

T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.sync = store
        # One writer thread keeps SQLite's single-writer rule and the order of each call's facts.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="puente-db")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.sync.close()
