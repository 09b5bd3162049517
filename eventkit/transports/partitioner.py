"""Kafka's default partitioner: murmur2 of the key bytes, made positive, modulo the count.

Written from Kafka's ``Utils.murmur2`` so that a key lands on the same partition index as on a
real cluster with the same partition count (and as with aiokafka's ``DefaultPartitioner``).
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` of ``data``: MurmurHash2 as a signed 32-bit int."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    # Java's switch on the 1-3 trailing bytes falls through, then multiplies once
    for index in range(rest - 1, -1, -1):
        h ^= data[tail + index] << (8 * index)
    if rest:
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def default_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
