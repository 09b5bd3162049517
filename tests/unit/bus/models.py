"""Payload types shared by the bus tests."""

from __future__ import annotations

import msgspec
import pydantic


class OrderPlaced(pydantic.BaseModel):
    order_id: str
    total: float


class StockReserved(msgspec.Struct):
    order_id: str
    sku: str
