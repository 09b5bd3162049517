"""Payload types shared by the bus tests."""

from __future__ import annotations

from typing import Any

import msgspec
import pydantic


class OrderPlaced(pydantic.BaseModel):
    order_id: str
    total: float


class StockReserved(msgspec.Struct):
    order_id: str
    sku: str


class RegionalOrder(pydantic.BaseModel):
    """A model whose validator fails with a KeyError (not a ValueError) on bad input."""

    order_id: str
    meta: dict[str, Any] = {}

    @pydantic.field_validator("meta")
    @classmethod
    def needs_region(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {"region": value["region"]} if value else value
