"""The task classes connector authors implement, the records they exchange and their contexts."""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections import deque
from collections.abc import Mapping
from functools import partial
from typing import Any, Iterable, NamedTuple, Sequence

from ._proto import connector_pb2 as pb
from .config import Config
from .data import Schema, from_data, schema_of, to_data

log = logging.getLogger("sluice_connector")

# Source partitions and offsets are JSON objects as text; dicts are written compactly and keep
# their key order, as the Rust SDK and the worker (serde_json with preserve_order) do.
json_text = partial(json.dumps, separators=(",", ":"), ensure_ascii=False)


def _canonical(text: str) -> str | None:
    """A partition's JSON in one spelling, to match positions written with other whitespace or
    key order; None for text that is not JSON."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return None


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class TopicPartitionOffset(NamedTuple):
    topic: str
    partition: int
    # The next offset to consume, as in a Kafka offset commit.
    offset: int


class TransactionBoundary(enum.IntEnum):
    """With `transaction.boundary=connector` on an exactly-once worker: what happens to the
    open transaction after a record."""

    NONE = pb.TRANSACTION_BOUNDARY_UNSPECIFIED
    COMMIT = pb.TRANSACTION_BOUNDARY_COMMIT
    ABORT = pb.TRANSACTION_BOUNDARY_ABORT


class ErrantRecordReporter:
    """Reports single bad records without failing the task (Kafka Connect's
    ErrantRecordReporter): the worker applies the connector's `errors.tolerance` (dead-letter
    queue, or failing the task). Reports are sent before the task's next batch (source) or
    before the current batch is acknowledged (sink). Safe to call from any thread."""

    def __init__(self) -> None:
        self._pending: deque[pb.RecordError] = deque()
        self._lock = threading.Lock()

    def report_sink(self, record: SinkRecord | pb.SinkRecord, message: str, trace: str = "") -> None:
        """A sink record the task could not write; the worker sends the original, as it is in
        Kafka, to the dead-letter queue."""
        proto = record.proto if isinstance(record, SinkRecord) else record
        self._push(pb.RecordError(topic=proto.topic, partition=proto.partition,
                                  offset=proto.offset, message=message, trace=trace))

    def report_source(self, topic: str, key: Any, value: Any, message: str, trace: str = "",
                      key_schema: Schema | None = None,
                      value_schema: Schema | None = None) -> None:
        """A source record the task could not produce (unreadable input), as it has it: raw
        bytes go to the dead-letter queue as they are, other values as schemaless JSON."""
        error = pb.RecordError(topic=topic, message=message, trace=trace)
        for target, item, schema in ((error.key, key, key_schema), (error.value, value, value_schema)):
            if item is None and schema is None:
                continue  # null: left absent
            try:
                target.CopyFrom(to_data(item, schema))
            except Exception as e:  # noqa: BLE001 - a report must not fail the task
                log.warning("reported %s record has a value with no protocol form (%s); "
                            "sending its repr", topic, e)
                target.raw = repr(item).encode("utf-8", "replace")
        self._push(error)

    def _push(self, error: pb.RecordError) -> None:
        with self._lock:
            self._pending.append(error)

    def _drain(self) -> list[pb.RecordError]:
        with self._lock:
            errors = list(self._pending)
            self._pending.clear()
        return errors


# -------------------------------------------------------------------------------------------
# Source tasks


class SourceTaskContext:
    """What a source task starts with."""

    def __init__(self, connector_name: str, task_id: int, config: Config,
                 positions: dict[str, str], errors: ErrantRecordReporter):
        self.connector_name = connector_name
        self.task_id = task_id
        self.config = config
        # Committed offsets of every source partition of the connector (all tasks), both as
        # JSON text: partition -> offset.
        self.positions = positions
        self.errors = errors
        self._canonical: dict[str, str] | None = None

    def offset(self, partition: Mapping[str, Any] | str) -> Any:
        """The committed offset of `partition` (a dict or its JSON text), parsed from JSON;
        None if there is none (or it is not JSON)."""
        text = partition if isinstance(partition, str) else json_text(partition)
        found = self.positions.get(text)
        if found is None:
            # The worker keeps partitions as the text it was given; another spelling of the
            # same JSON (a Kafka Connect offsets topic, key order) still matches.
            if self._canonical is None:
                self._canonical = {}
                for p, o in self.positions.items():
                    key = _canonical(p)
                    if key is not None:
                        self._canonical[key] = o
            key = _canonical(text)
            found = None if key is None else self._canonical.get(key)
        if found is None:
            return None
        try:
            return json.loads(found)
        except ValueError:
            log.warning("committed offset of %s is not JSON: %r", text, found)
            return None


class SourceRecord:
    """A record produced by a source task.

    `key` and `value` are converted with `to_data`: bytes are raw, `None` is null, a `Struct`
    carries its schema, other values are schemaless unless `key_schema`/`value_schema` is given.
    `source_partition` and `source_offset` are dicts (or their JSON text); the offset is the
    position reached once this record is committed. Reuse one partition object (or string)
    across records: the SDK serializes it once per batch.
    """

    __slots__ = ("topic", "value", "key", "source_partition", "source_offset", "kafka_partition",
                 "headers", "timestamp_ms", "transaction", "key_schema", "value_schema")

    def __init__(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        *,
        source_partition: Mapping[str, Any] | str | None = None,
        source_offset: Mapping[str, Any] | str | None = None,
        kafka_partition: int | None = None,
        headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        timestamp_ms: int | None = None,
        transaction: TransactionBoundary = TransactionBoundary.NONE,
        key_schema: Schema | None = None,
        value_schema: Schema | None = None,
    ):
        self.topic = topic
        self.value = value
        self.key = key
        self.source_partition = source_partition
        self.source_offset = source_offset
        self.kafka_partition = kafka_partition
        self.headers = headers
        self.timestamp_ms = timestamp_ms
        self.transaction = transaction
        self.key_schema = key_schema
        self.value_schema = value_schema

    def __repr__(self) -> str:
        return (f"SourceRecord(topic={self.topic!r}, key={self.key!r}, value={self.value!r}, "
                f"source_partition={self.source_partition!r}, "
                f"source_offset={self.source_offset!r})")


class SourceTask:
    """A running source task. The SDK calls `poll` only while the worker has granted credit,
    from one thread, and never interrupts a poll in progress."""

    def start(self, ctx: SourceTaskContext) -> None:
        """Prepares the task; resume from `ctx.offset(partition)`."""

    def poll(self, max_records: int) -> list[SourceRecord]:
        """Up to `max_records` new records; [] when there is nothing yet. When idle, return
        within about a second so that stops are seen promptly."""
        raise NotImplementedError("a SourceTask must implement poll")

    def commit(self, positions: list[tuple[str, str]]) -> None:
        """(partition, offset) pairs, as JSON text, now durable in Kafka and committed: the
        latest offset of each partition among the acknowledged batches."""

    def stop(self) -> None:
        """Releases the task's resources; called once, also after a failure."""


# -------------------------------------------------------------------------------------------
# Sink tasks


_UNSET: Any = object()


class SinkRecord:
    """A record given to a sink task. `key`, `value` and `headers` are decoded to Python values
    on first access (see `from_data`); `proto` is the protocol message itself."""

    __slots__ = ("proto", "_key", "_value")

    def __init__(self, proto: pb.SinkRecord):
        self.proto = proto
        self._key = _UNSET
        self._value = _UNSET

    @property
    def topic(self) -> str:
        return self.proto.topic

    @property
    def partition(self) -> int:
        return self.proto.partition

    @property
    def offset(self) -> int:
        return self.proto.offset

    @property
    def timestamp_ms(self) -> int | None:
        return self.proto.timestamp_ms if self.proto.HasField("timestamp_ms") else None

    @property
    def key(self) -> Any:
        if self._key is _UNSET:
            self._key = from_data(self.proto.key) if self.proto.HasField("key") else None
        return self._key

    @property
    def value(self) -> Any:
        if self._value is _UNSET:
            self._value = from_data(self.proto.value) if self.proto.HasField("value") else None
        return self._value

    @property
    def key_schema(self) -> Schema | None:
        return schema_of(self.proto.key) if self.proto.HasField("key") else None

    @property
    def value_schema(self) -> Schema | None:
        return schema_of(self.proto.value) if self.proto.HasField("value") else None

    @property
    def headers(self) -> list[tuple[str, Any]]:
        """(key, value) pairs in order; a key may repeat."""
        return [(h.key, from_data(h.value) if h.HasField("value") else None)
                for h in self.proto.headers]

    def __repr__(self) -> str:
        return (f"SinkRecord({self.topic}-{self.partition}@{self.offset}, key={self.key!r}, "
                f"value={self.value!r})")


class SinkTaskContext:
    """What a sink task starts with."""

    def __init__(self, connector_name: str, task_id: int, config: Config,
                 errors: ErrantRecordReporter):
        self.connector_name = connector_name
        self.task_id = task_id
        self.config = config
        self.errors = errors


class SinkTask:
    """A running sink task. The SDK calls its methods from one thread, in the order the
    worker's messages arrive."""

    def start(self, ctx: SinkTaskContext) -> None:
        """Prepares the task."""

    def put(self, records: list[SinkRecord]) -> None:
        """Takes a batch of records; they need not be durable before `flush`."""
        raise NotImplementedError("a SinkTask must implement put")

    def open(self, partitions: list[TopicPartition]) -> Sequence[TopicPartitionOffset]:
        """The task was given `partitions` (Kafka Connect's `open`). A sink that stores its
        Kafka offsets in its own system, atomically with the data, returns them (the next
        offset to read per partition) and the worker starts there: exactly-once delivery into
        it. The default ([]) starts at the consumer group's committed offsets."""
        return []

    def flush(self, offsets: list[TopicPartitionOffset]) -> Sequence[TopicPartitionOffset]:
        """Makes everything put so far durable and returns the offsets that are safe to commit
        (Kafka Connect's `preCommit`), each at most the requested one. The default returns
        `offsets`, for a task whose `put` is already durable."""
        return offsets

    def stop(self) -> None:
        """Releases the task's resources; called once, also after a failure."""
