"""Tests of the source batch encoding in sluice_connector.serve: what the SDK writes field by
field reads back as the batch protobuf itself would build from the same records."""

import unittest

from sluice_connector import Schema, SchemaType, SourceRecord, TaskError, TransactionBoundary
from sluice_connector._proto import connector_pb2 as pb
from sluice_connector.data import fill_data
from sluice_connector.serve import _encode_batch
from sluice_connector.task import json_text


def records():
    """Records of every shape: raw and null keys and values, typed ones, headers, partitions
    shared, repeated as equal text and missing, every optional field set and not."""
    shared = {"file": "a"}
    out = []
    keys = [None, b"", b"k", b"x" * 300, "text", 7]
    values = [None, b"", b"v" * 100, b"w" * 20000, "text", {"a": 1}]
    for n in range(72):
        out.append(SourceRecord(
            ["t", "", "a-much-longer-topic-name"][n % 3],
            values[n % len(values)],
            keys[(n // 2) % len(keys)],
            source_partition=[None, shared, '{"file":"b"}', {"file": "a"}][n % 4],
            source_offset=[None, '{"seq":%d}' % n, {"seq": n}, ""][(n // 3) % 4],
            kafka_partition=[None, 0, -1, 5][(n // 4) % 4],
            headers=[None, {}, {"h": b"1"}][(n // 5) % 3] if n % 7 else [("h", "x")],
            timestamp_ms=[None, 0, -5, 1_700_000_000_000][(n // 6) % 4],
            transaction=list(TransactionBoundary)[n % 3],
            value_schema=Schema(SchemaType.STRING) if n == 4 else None,
        ))
    return out


def expected(seq, records):
    """The batch as protobuf builds it from the records."""
    batch = pb.SourceBatch(seq=seq)
    index = {}
    for r in records:
        proto = batch.records.add(topic=r.topic)
        if r.source_partition is not None:
            text = r.source_partition if isinstance(r.source_partition, str) \
                else json_text(r.source_partition)
            proto.partition = index.setdefault(text, len(index))
        if r.source_offset is not None:
            proto.offset = r.source_offset if isinstance(r.source_offset, str) \
                else json_text(r.source_offset)
        if r.value is not None or r.value_schema is not None:
            fill_data(proto.value, r.value, r.value_schema)
        if r.key is not None or r.key_schema is not None:
            fill_data(proto.key, r.key, r.key_schema)
        if r.kafka_partition is not None:
            proto.kafka_partition = r.kafka_partition
        if r.timestamp_ms is not None:
            proto.timestamp_ms = r.timestamp_ms
        proto.transaction = int(r.transaction)
        headers = r.headers or {}
        for name, header in headers.items() if isinstance(headers, dict) else headers:
            fill_data(proto.headers.add(key=name).value, header)
    batch.partitions.extend(index)
    return batch


class SourceBatchEncodingTest(unittest.TestCase):
    def test_a_batch_reads_back_as_protobuf_builds_it(self):
        for seq, batch in [(1, records()), (2**64 - 1, records()[:5]), (3, [])]:
            payload, size, positions = _encode_batch(seq, batch)
            response = pb.SourceResponse.FromString(payload)
            self.assertEqual(response.WhichOneof("kind"), "batch")
            self.assertEqual(response.batch, expected(seq, batch))
            self.assertEqual(size, response.batch.ByteSize())
            self.assertEqual(len(payload), response.ByteSize())
            # The last offset per partition, as the task is told once it is committed.
            last = {}
            for r in batch:
                if r.source_partition is not None and r.source_offset is not None:
                    text = r.source_partition if isinstance(r.source_partition, str) \
                        else json_text(r.source_partition)
                    last[text] = r.source_offset if isinstance(r.source_offset, str) \
                        else json_text(r.source_offset)
            self.assertEqual(positions, last)

    def test_a_plain_record_is_written_as_protobuf_writes_it(self):
        record = SourceRecord("t", b"v" * 200, b"k", source_partition='{"p":1}',
                              source_offset='{"seq":1}', kafka_partition=-1, timestamp_ms=5,
                              transaction=TransactionBoundary.COMMIT)
        payload, _, _ = _encode_batch(0, [record])
        ours = pb.SourceResponse.FromString(payload).batch
        entry = expected(0, [record]).records[0].SerializeToString()
        self.assertIn(b"\x1a" + bytes([len(entry) & 0x7F | 0x80, len(entry) >> 7]) + entry,
                      payload)
        self.assertEqual(ours.partitions, ['{"p":1}'])

    def test_a_record_that_cannot_be_sent_fails_naming_its_topic(self):
        for bad in [SourceRecord("t", b"v", kafka_partition="0"), "not a record"]:
            with self.assertRaises(TaskError) as caught:
                _encode_batch(1, [bad])
            self.assertTrue("'t'" in caught.exception.message
                            or "str" in caught.exception.message, caught.exception.message)


if __name__ == "__main__":
    unittest.main()
