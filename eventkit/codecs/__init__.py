"""Envelope codecs (eventkit JSON, CloudEvents) and the per-handler payload decoders."""

from __future__ import annotations

from eventkit.codecs.limits import DecodeLimits
from eventkit.codecs.payload import PayloadDecoder, build_payload_decoder
from eventkit.codecs.reader import EnvelopeReader
from eventkit.codecs.wire import WireEvent

__all__ = [
    "DecodeLimits",
    "EnvelopeReader",
    "PayloadDecoder",
    "WireEvent",
    "build_payload_decoder",
]
