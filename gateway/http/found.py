"""The one way an operator endpoint answers for a record that does not exist."""
from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException

T = TypeVar("T")


def found(record: T | None, what: str) -> T:
    """``record``, or a 404 saying ``no <what>``."""
    if record is None:
        raise HTTPException(status_code=404, detail=f"no {what}")
    return record
