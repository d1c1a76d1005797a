from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from runstream.events.partitioning import murmur2, partition_for_key

# Vectors from Kafka's own UtilsTest.testMurmur2.
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_kafka_vectors() -> None:
    for data, expected in KAFKA_VECTORS.items():
        assert murmur2(data) == expected, data


@given(st.binary(max_size=200))
def test_murmur2_matches_aiokafka(data: bytes) -> None:
    # Kafka's Java client returns a signed int32, aiokafka the same 32 bits unsigned.
    assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=64), st.integers(min_value=1, max_value=64))
def test_partition_matches_aiokafka_default_partitioner(key: bytes, partitions: int) -> None:
    all_partitions = list(range(partitions))
    assert partition_for_key(key, partitions) == DefaultPartitioner()(key, all_partitions, all_partitions)
