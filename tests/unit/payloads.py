"""One order payload in each shape a handler may declare, shared by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pydantic


class OrderModel(pydantic.BaseModel):
    """A pydantic payload."""

    order_id: str
    total: float


class OrderStruct(msgspec.Struct):
    """A msgspec payload."""

    order_id: str
    total: float


@dataclass(frozen=True)
class OrderData:
    """A dataclass payload."""

    order_id: str
    total: float
