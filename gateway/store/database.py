"""The database behind the store: engine, the one writer thread, transactions, and error wrapping.

Every operation of the store runs as a plain function of a SQLAlchemy ``Session`` on one worker
thread, so the event loop never blocks on disk, SQLite keeps its single writer, and each call's
facts are written in the order they happened. Driver errors leave this module as ``StoreError``
only: nothing above the store imports SQLAlchemy.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.schema import Base

T = TypeVar("T")


class StoreError(Exception):
    """The database could not be opened, read or written; the message says why."""


class Database:
    """Opens ``url`` (creating every table of :mod:`gateway.store.schema`) or raises ``StoreError``."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = _make_engine(url)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open database {self.display_url}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="puente-db")

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for logs and ``/healthz``."""
        return make_url(self.url).render_as_string(hide_password=True)

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction on the writer thread: all of it commits, or none."""
        return await self._run(work, transaction=True)

    async def read(self, work: Callable[[Session], T]) -> T:
        return await self._run(work, transaction=False)

    async def _run(self, work: Callable[[Session], T], *, transaction: bool) -> T:
        def run() -> T:
            try:
                if transaction:
                    with self._sessions.begin() as session:
                        return work(session)
                with self._sessions() as session:
                    return work(session)
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(_describe(exc)) from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()


def _describe(exc: BaseException) -> str:
    """The driver's own words (``database or disk is full``), not SQLAlchemy's wrapping of them."""
    cause = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the HTTP API read while calls write; foreign keys are off by default in SQLite.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
