"""The server side of the connector protocol (docs/connector-protocol.md): one gRPC service on
the worker's Unix socket that drives the plugin's connectors and tasks.

Threads: gRPC runs every call on a pool thread. Task code never runs there: each task stream
has a task thread that calls the task and hands responses to the stream's pool thread through
a small bounded outbox, and a source stream has a reader thread for credits, acks and Stop.
Heartbeats are therefore answered however long a poll or put takes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import traceback
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NoReturn

import grpc

from ._proto import connector_pb2 as pb
from .config import Config, ConfigDef, FieldError
from .connector import Plugin, Reconfigure, _Entry
from .data import fill_data
from .errors import TaskError, as_task_error
from .task import (
    ErrantRecordReporter,
    SinkRecord,
    SinkTaskContext,
    SourceRecord,
    SourceTaskContext,
    TopicPartition,
    TopicPartitionOffset,
    json_text,
)

log = logging.getLogger("sluice_connector")

ENV_SOCKET = "SLUICE_CONNECTOR_SOCKET"
ENV_PROTOCOL_VERSIONS = "SLUICE_PROTOCOL_VERSIONS"
ENV_LOG = "SLUICE_LOG"
# Protocol versions this SDK speaks, and the optional features it implements (none yet).
PROTOCOL_VERSIONS = (1,)
FEATURES: frozenset[str] = frozenset()
# Largest number of records the SDK asks a source task for in one poll.
MAX_POLL_RECORDS = 4096
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# After Shutdown the process exits at the latest this many seconds later.
SHUTDOWN_DEADLINE = 10.0
# Pool threads for calls: one per open stream plus the unary calls, with room to spare.
RPC_THREADS = 64
# Responses a task may have queued ahead of its stream (a Rust SDK channel holds 8).
OUTBOX_LIMIT = 8


class ConnectorError(Exception):
    """The connector process cannot serve (no socket to listen on, ...)."""


def _serialize(message: Any) -> bytes:
    # Source batches are encoded by the task thread (their encoded size is their cost in byte
    # credit) and travel as bytes, so each batch is serialized once.
    return message if isinstance(message, bytes) else message.SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# SourceResponse.batch is field 2, length-delimited: tag (2 << 3) | 2.
_BATCH_TAG = b"\x12"


class _Outbox:
    """Responses of one stream, from its task thread to the pool thread that sends them."""

    def __init__(self, limit: int = OUTBOX_LIMIT):
        self._items: deque[Any] = deque()
        self._limit = limit
        self._cond = threading.Condition()
        self._finished = False  # the task thread has put its last response
        self._gone = False  # the call ended: nothing more can be sent

    def put(self, message: Any) -> bool:
        """Queues a response, waiting while the outbox is full; False once the call is gone."""
        with self._cond:
            while len(self._items) >= self._limit and not self._gone:
                self._cond.wait()
            if self._gone:
                return False
            self._items.append(message)
            self._cond.notify_all()
            return True

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def gone(self) -> None:
        with self._cond:
            self._gone = True
            self._items.clear()
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._cond:
                while not self._items and not self._finished and not self._gone:
                    self._cond.wait()
                if not self._items:
                    return
                message = self._items.popleft()
                self._cond.notify_all()
            yield message


def _call(what: str, function: Any, *args: Any) -> Any:
    """Calls task code; any failure comes out as a TaskError naming `what`."""
    try:
        return function(*args)
    except TaskError:
        raise
    except BaseException as e:  # noqa: BLE001 - task code must not take the stream down
        raise as_task_error(e, what) from e


def _on_end(context: grpc.ServicerContext, callback: Any) -> None:
    """Runs `callback` when the call ends (at once if it already has)."""
    if not context.add_callback(callback):
        callback()


def _start_thread(target: Any, name: str) -> None:
    threading.Thread(target=target, name=name, daemon=True).start()


# -------------------------------------------------------------------------------------------
# Source streams


class _SourceFlow:
    """Credits, acknowledgements and stop requests of one source stream, written by its reader
    thread and read by its task thread."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.records = 0
        self.bytes = 0
        self.acked = 0
        self.stop = False
        self.closed = False

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.stop = True
            self.cond.notify_all()


def _read_source_requests(requests: Iterator[pb.SourceRequest], flow: _SourceFlow) -> None:
    try:
        for request in requests:
            kind = request.WhichOneof("kind")
            with flow.cond:
                if kind == "credit":
                    flow.records += request.credit.records
                    flow.bytes += request.credit.bytes
                elif kind == "ack":
                    flow.acked = max(flow.acked, request.ack.batch_seq)
                elif kind == "stop":
                    flow.stop = True
                else:
                    log.warning("ignoring unexpected %s message on a source stream", kind or "empty")
                flow.cond.notify_all()
    except grpc.RpcError:
        pass  # the call was cancelled: same as a close
    except Exception:  # noqa: BLE001
        log.exception("source stream reader failed")
    finally:
        flow.close()


# Varints of the lengths most fields have, looked up instead of computed.
_VARINTS = [_varint(n) for n in range(1 << 14)]
_U64 = (1 << 64) - 1


def _len_varint(n: int) -> bytes:
    return _VARINTS[n] if n < 16384 else _varint(n)


def _value_head(n: int) -> bytes:
    """What precedes an `n`-byte raw value: `SourceRecord.value` (6) holding `Data.raw` (1)."""
    raw = b"\x0a" + _len_varint(n)
    return b"\x32" + _len_varint(len(raw) + n) + raw


def _key_fields(kafka_partition: int | None, key: bytes | None) -> bytes:
    """`SourceRecord.kafka_partition` (4) and a raw `key` (5), as far as they are set."""
    out = b""
    if kafka_partition is not None:
        out += b"\x20" + _varint(kafka_partition & _U64)
    if key is not None:
        raw = b"\x0a" + _len_varint(len(key))
        out += b"\x2a" + _len_varint(len(raw) + len(key)) + raw + key
    return out


def _tail_fields(timestamp_ms: int | None, transaction: int) -> bytes:
    """`SourceRecord.timestamp_ms` (8) and `transaction` (9), as far as they are set."""
    out = b""
    if timestamp_ms is not None:
        out += b"\x40" + _varint(timestamp_ms & _U64)
    if transaction:
        out += b"\x48" + _varint(int(transaction))
    return out


def _encode_batch(seq: int, records: list[SourceRecord]) -> tuple[bytes, int, dict[str, str]]:
    """The SourceResponse carrying the batch, encoded; the batch's encoded size; and the last
    offset per source partition in it. Partitions are interned: each is listed once in the batch
    and records refer to it by index.

    A record whose key and value are raw bytes or None, with no headers (what a task moving
    bytes produces), is written here field by field, as protobuf lays it out; any other record
    is built as a message and serialized by protobuf. Either way it is one `records` entry of
    the batch, whose fields may come in any order: the records go first, then `seq` and the
    partitions."""
    # parts[0] becomes the batch's key and length: the frame is joined once.
    parts: list[bytes] = [b""]
    add = parts.append
    partitions: list[str] = []
    index: dict[str, int] = {}
    last_offsets: dict[str, str] = {}
    topics: dict[str, bytes] = {}  # topic -> its field, encoded once per batch
    # Tasks usually reuse one partition object: skip its JSON encoding and lookup.
    last_partition: Any = None
    last_text = ""
    last_index = 0
    last_field = b""
    last_topic: Any = None
    topic = b""
    length = _len_varint
    V = _VARINTS
    value_heads: dict[int, bytes] = {}  # value length -> its field's key and lengths
    for record in records:
        if type(record) is not SourceRecord and not isinstance(record, SourceRecord):
            raise TaskError(f"poll returned a {type(record).__name__} instead of a SourceRecord")
        try:
            partition = record.source_partition
            offset = record.source_offset
            if type(offset) is not str and offset is not None:
                offset = json_text(offset)
            field = b""
            if partition is not None:
                if partition is not last_partition:
                    text = partition if type(partition) is str else json_text(partition)
                    found = index.get(text)
                    if found is None:
                        found = index[text] = len(partitions)
                        partitions.append(text)
                    last_partition, last_text, last_index = partition, text, found
                    last_field = b"\x08" + _varint(found)
                field = last_field
                if offset is not None:
                    last_offsets[last_text] = offset
            key, value = record.key, record.value
            if ((type(value) is bytes or value is None) and (key is None or type(key) is bytes)
                    and record.value_schema is None and record.key_schema is None
                    and not record.headers):
                # Varints looked up inline: a call per length costs more than the rest.
                if record.topic is not last_topic:
                    last_topic = record.topic
                    topic = topics.get(last_topic)
                    if topic is None:
                        text = last_topic.encode()
                        topic = b"\x1a" + length(len(text)) + text if text else b""
                        topics[last_topic] = topic
                if offset:
                    text = offset.encode()
                    n = len(text)
                    head = field + b"\x12" + (V[n] if n < 16384 else _varint(n)) + text + topic
                else:
                    head = field + topic
                if key is not None or record.kafka_partition is not None:
                    head += _key_fields(record.kafka_partition, key)
                tail = b""
                if record.timestamp_ms is not None or record.transaction:
                    tail = _tail_fields(record.timestamp_ms, record.transaction)
                if value is None:
                    n = len(head) + len(tail)
                    add(b"\x1a" + (V[n] if n < 16384 else _varint(n)) + head + tail)
                    continue
                n = len(value)
                value_head = value_heads.get(n)
                if value_head is None:
                    value_head = value_heads[n] = _value_head(n)
                n += len(head) + len(value_head) + len(tail)
                add(b"\x1a" + (V[n] if n < 16384 else _varint(n)) + head + value_head)
                add(value)
                if tail:
                    add(tail)
                continue
            proto = pb.SourceRecord(topic=record.topic)
            if partition is not None:
                proto.partition = last_index
            if offset is not None:
                proto.offset = offset
            if value is not None or record.value_schema is not None:
                fill_data(proto.value, value, record.value_schema)
            if key is not None or record.key_schema is not None:
                fill_data(proto.key, key, record.key_schema)
            if record.kafka_partition is not None:
                proto.kafka_partition = record.kafka_partition
            if record.timestamp_ms is not None:
                proto.timestamp_ms = record.timestamp_ms
            if record.transaction:
                proto.transaction = int(record.transaction)
            headers = record.headers
            if headers:
                pairs = headers.items() if isinstance(headers, Mapping) else headers
                for name, header in pairs:
                    fill_data(proto.headers.add(key=name).value, header)
            encoded = proto.SerializeToString()
            add(b"\x1a" + length(len(encoded)))
            add(encoded)
        except Exception as e:  # noqa: BLE001 - a bad record fails the task, not the process
            raise TaskError(
                f"poll returned a record for topic {record.topic!r} that cannot be sent: {e}",
                trace=traceback.format_exc(),
            ) from e
    if seq:
        add(b"\x08" + _varint(seq))
    for text in partitions:
        encoded = text.encode()
        add(b"\x12" + length(len(encoded)) + encoded)
    size = sum(map(len, parts))
    parts[0] = _BATCH_TAG + _len_varint(size)
    return b"".join(parts), size, last_offsets


class _SourceDriver:
    """Runs one source task on its own thread, as §4 of the protocol describes."""

    def __init__(self, task: Any, open_: pb.SourceOpen, flow: _SourceFlow, outbox: _Outbox):
        self.task = task
        self.open = open_
        self.flow = flow
        self.outbox = outbox
        self.errors = ErrantRecordReporter()
        # Sent batches awaiting their acknowledgement: (seq, last offset per partition).
        self.pending: deque[tuple[int, dict[str, str]]] = deque()

    def run(self) -> None:
        name = f"{self.open.connector_name}-{self.open.task_id}"
        try:
            error = None
            ctx = SourceTaskContext(
                connector_name=self.open.connector_name,
                task_id=self.open.task_id,
                config=Config(self.open.config),
                positions={p.partition: p.offset for p in self.open.positions},
                errors=self.errors,
            )
            try:
                _call("start", self.task.start, ctx)
                if self.outbox.put(pb.SourceResponse(opened=pb.SourceOpened())):
                    self._drive()
            except TaskError as e:
                error = e
            try:
                _call("stop", self.task.stop)
            except TaskError as e:
                error = error or e
            if error is not None:
                log.error("source task %s failed: %s", name, error.message)
                if error.trace:
                    log.debug("%s", error.trace)
                self.outbox.put(pb.SourceResponse(error=error.to_proto()))
        except BaseException:  # noqa: BLE001 - last resort: the stream must still end
            log.exception("source task %s: unexpected failure in the SDK", name)
        finally:
            self.outbox.finish()

    def _send_record_errors(self) -> bool:
        for error in self.errors._drain():
            if not self.outbox.put(pb.SourceResponse(record_error=error)):
                return False
        return True

    def _drive(self) -> None:
        flow = self.flow
        seq = 0
        while True:
            self._commit_acked()
            with flow.cond:
                if flow.stop:
                    break
                if flow.records <= 0 or flow.bytes <= 0:
                    # Nothing may be sent: wait for credit (or an ack, or Stop).
                    flow.cond.wait(1.0)
                    continue
                max_records = min(flow.records, MAX_POLL_RECORDS)
            records = _call("poll", self.task.poll, max_records)
            # Bad records the poll reported go first: the worker handles them before the batch.
            if not self._send_record_errors():
                return
            if not records:
                continue
            if not isinstance(records, list):
                records = list(records)
            if len(records) > max_records:
                raise TaskError(
                    f"poll returned {len(records)} records when asked for at most {max_records}")
            seq += 1
            payload, size, positions = _encode_batch(seq, records)
            with flow.cond:
                flow.records -= len(records)
                flow.bytes -= size
            self.pending.append((seq, positions))
            if not self.outbox.put(payload):
                return
        if flow.closed:
            return  # the worker went away without Stop: stop the task at once
        # Asked to stop: everything polled is sent; report the last batch and wait for its ack
        # so that the task hears of every commit before it stops.
        stopped = pb.SourceResponse(stopped=pb.SourceStopped(last_batch_seq=seq))
        if not self.outbox.put(stopped):
            return
        with flow.cond:
            while flow.acked < seq and not flow.closed:
                flow.cond.wait()
        self._commit_acked()

    def _commit_acked(self) -> None:
        acked = self.flow.acked
        if not self.pending or self.pending[0][0] > acked:
            return
        latest: dict[str, str] = {}
        while self.pending and self.pending[0][0] <= acked:
            latest.update(self.pending.popleft()[1])
        if latest:
            _call("commit", self.task.commit, list(latest.items()))


# -------------------------------------------------------------------------------------------
# Sink streams


def _offsets(result: Any, what: str) -> list[TopicPartitionOffset]:
    """Offsets a task returned, as (topic, partition, offset) triples."""
    out = []
    for item in result or ():
        if isinstance(item, pb.TopicPartitionOffset):
            out.append(TopicPartitionOffset(item.topic, item.partition, item.offset))
            continue
        try:
            topic, partition, offset = item
            out.append(TopicPartitionOffset(str(topic), int(partition), int(offset)))
        except (TypeError, ValueError):
            raise TaskError(
                f"{what} returned {item!r} instead of a (topic, partition, offset) triple"
            ) from None
    return out


def _offsets_proto(offsets: list[TopicPartitionOffset]) -> list[pb.TopicPartitionOffset]:
    return [pb.TopicPartitionOffset(topic=t, partition=p, offset=o) for t, p, o in offsets]


class _SinkDriver:
    """Runs one sink task on its own thread, as §5 of the protocol describes."""

    def __init__(self, task: Any, open_: pb.SinkOpen, requests: Iterator[pb.SinkRequest],
                 outbox: _Outbox):
        self.task = task
        self.open = open_
        self.requests = requests
        self.outbox = outbox
        self.errors = ErrantRecordReporter()

    def run(self) -> None:
        name = f"{self.open.connector_name}-{self.open.task_id}"
        try:
            error = None
            ctx = SinkTaskContext(
                connector_name=self.open.connector_name,
                task_id=self.open.task_id,
                config=Config(self.open.config),
                errors=self.errors,
            )
            try:
                _call("start", self.task.start, ctx)
                if self.outbox.put(pb.SinkResponse(opened=pb.SinkOpened())):
                    self._drive()
            except TaskError as e:
                error = e
            try:
                _call("stop", self.task.stop)
            except TaskError as e:
                error = error or e
            if error is None:
                self.outbox.put(pb.SinkResponse(stopped=pb.SinkStopped()))
            else:
                log.error("sink task %s failed: %s", name, error.message)
                if error.trace:
                    log.debug("%s", error.trace)
                self.outbox.put(pb.SinkResponse(error=error.to_proto()))
        except BaseException:  # noqa: BLE001 - last resort: the stream must still end
            log.exception("sink task %s: unexpected failure in the SDK", name)
        finally:
            self.outbox.finish()

    def _drive(self) -> None:
        try:
            for request in self.requests:
                reply = self._handle(request)
                if reply is False:
                    return
                if reply is None:
                    continue
                # Bad records reported by the call go before its reply: before the batch's ack,
                # so before any flush that could commit past them.
                for error in self.errors._drain():
                    if not self.outbox.put(pb.SinkResponse(record_error=error)):
                        return
                if not self.outbox.put(reply):
                    return
        except grpc.RpcError:
            pass  # the call was cancelled: stop the task

    def _handle(self, request: pb.SinkRequest) -> Any:
        """The reply to one request; None for none, False to end the stream (Stop)."""
        kind = request.WhichOneof("kind")
        if kind == "batch":
            records = [SinkRecord(r) for r in request.batch.records]
            _call("put", self.task.put, records)
            return pb.SinkResponse(ack=pb.SinkBatchAck(seq=request.batch.seq))
        if kind == "flush":
            requested = [TopicPartitionOffset(o.topic, o.partition, o.offset)
                         for o in request.flush.offsets]
            safe = _offsets(_call("flush", self.task.flush, list(requested)), "flush")
            offsets = _offsets_proto(self._at_most(safe, requested))
            return pb.SinkResponse(
                flushed=pb.FlushResponse(flush_id=request.flush.flush_id, offsets=offsets))
        if kind == "assigned":
            partitions = [TopicPartition(p.topic, p.partition) for p in request.assigned.partitions]
            positions = _offsets(_call("open", self.task.open, partitions), "open")
            return pb.SinkResponse(positions=pb.PartitionPositions(
                id=request.assigned.id, offsets=_offsets_proto(positions)))
        if kind == "stop":
            return False
        log.warning("ignoring unexpected %s message on a sink stream", kind or "empty")
        return None

    @staticmethod
    def _at_most(safe: list[TopicPartitionOffset],
                 requested: list[TopicPartitionOffset]) -> list[TopicPartitionOffset]:
        """The protocol lets a flush answer at most the requested offsets: keep it so."""
        limits = {(t, p): o for t, p, o in requested}
        out = []
        for topic, partition, offset in safe:
            limit = limits.get((topic, partition))
            if limit is None:
                log.warning("flush returned %s-%d, which was not requested; dropped",
                            topic, partition)
                continue
            if offset > limit:
                log.warning("flush returned offset %d for %s-%d, beyond the requested %d",
                            offset, topic, partition, limit)
                offset = limit
            out.append(TopicPartitionOffset(topic, partition, offset))
        return out


# -------------------------------------------------------------------------------------------
# The service


class _Service:
    def __init__(self, plugin: Plugin):
        self.plugin = plugin
        self.shutdown_requested = threading.Event()

    def _entry(self, class_name: str, context: grpc.ServicerContext) -> _Entry:
        entry = self.plugin.find(class_name)
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"plugin {self.plugin.name} has no connector class {json.dumps(class_name)}")
        return entry  # type: ignore[return-value]

    def _fail(self, context: grpc.ServicerContext, what: str, e: Exception,
              code: grpc.StatusCode = grpc.StatusCode.INTERNAL) -> NoReturn:
        """Answers a call whose connector code raised."""
        error = as_task_error(e, what)
        if not isinstance(e, TaskError):
            log.error("%s\n%s", error.message, error.trace)
        context.abort(code, error.message)
        raise AssertionError("unreachable")

    def handshake(self, request: pb.HandshakeRequest,
                  context: grpc.ServicerContext) -> pb.HandshakeResponse:
        common = [v for v in PROTOCOL_VERSIONS if v in request.protocol_versions]
        if not common:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no common protocol version: worker speaks {list(request.protocol_versions)}, "
                f"connector speaks {list(PROTOCOL_VERSIONS)}",
            )
        try:
            plugin = self.plugin.info()
        except Exception as e:  # noqa: BLE001
            self._fail(context, "describe plugin", e)
        return pb.HandshakeResponse(
            protocol_version=max(common),
            # Unknown feature names are ignored: only those both sides know are in effect.
            features=[f for f in request.features if f in FEATURES],
            plugin=plugin,
        )

    def describe(self, request: pb.DescribeRequest,
                 context: grpc.ServicerContext) -> pb.DescribeResponse:
        entry = self._entry(request.connector_class, context)
        try:
            configs = [d.to_proto() if isinstance(d, ConfigDef) else d
                       for d in entry.connector.config_defs()]
            return pb.DescribeResponse(configs=configs)
        except Exception as e:  # noqa: BLE001
            self._fail(context, "config_defs", e)

    def validate(self, request: pb.ValidateRequest,
                 context: grpc.ServicerContext) -> pb.ValidateResponse:
        entry = self._entry(request.connector_class, context)
        try:
            problems = entry.connector.validate(Config(request.config)) or []
            errors = []
            for problem in problems:
                if isinstance(problem, pb.FieldError):
                    errors.append(problem)
                else:
                    name, message = problem
                    errors.append(pb.FieldError(name=str(name), message=str(message)))
            return pb.ValidateResponse(errors=errors)
        except Exception as e:  # noqa: BLE001 - a bug, not a configuration problem
            self._fail(context, "validate", e)

    def plan(self, request: pb.PlanRequest, context: grpc.ServicerContext) -> pb.PlanResponse:
        entry = self._entry(request.connector_class, context)
        max_tasks = max(request.max_tasks, 1)
        try:
            tasks = list(entry.connector.plan(Config(request.config), max_tasks) or [])
            configs = [pb.TaskConfig(config={str(k): str(v) for k, v in task.items()})
                       for task in tasks[:max_tasks]]
        except Exception as e:  # noqa: BLE001 - TaskError or not, the plan cannot be made
            self._fail(context, "plan", e, grpc.StatusCode.INVALID_ARGUMENT)
        if not configs:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the connector planned no tasks")
        return pb.PlanResponse(tasks=configs)

    def monitor(self, request: pb.MonitorRequest,
                context: grpc.ServicerContext) -> Iterator[pb.MonitorEvent]:
        entry = self._entry(request.connector_class, context)
        config = Config(request.config)
        outbox = _Outbox(limit=1 << 30)  # requests are few and small: never block the watcher
        reconfigure = Reconfigure(
            lambda reason: outbox.put(pb.MonitorEvent(reconfigure=pb.Reconfigure(reason=reason))))

        def ended() -> None:
            reconfigure._close()
            outbox.gone()

        _on_end(context, ended)

        def watch() -> None:
            try:
                entry.connector.monitor(config, reconfigure)
            except Exception:  # noqa: BLE001
                log.exception("monitor of %s failed; the worker stops listening", entry.class_name)
            finally:
                # Returning ends the stream: the worker then knows no request will come.
                reconfigure._close()
                outbox.finish()

        _start_thread(watch, f"monitor-{entry.class_name}")
        yield from outbox

    def heartbeat(self, request: pb.HeartbeatRequest,
                  context: grpc.ServicerContext) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse(nonce=request.nonce)

    def _open(self, requests: Iterator[Any], kind: str, context: grpc.ServicerContext) -> Any:
        """The stream's first message, which must open it, and the class it names."""
        try:
            first = next(requests, None)
        except grpc.RpcError:
            first = None
        if first is None or first.WhichOneof("kind") != "open":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a {kind} stream must start with open")
        entry = self._entry(first.open.connector_class, context)
        wanted = pb.CONNECTOR_TYPE_SOURCE if kind == "source" else pb.CONNECTOR_TYPE_SINK
        if entry.kind != wanted:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{first.open.connector_class} is not a {kind} connector")
        return first.open, entry

    def source(self, requests: Iterator[pb.SourceRequest],
               context: grpc.ServicerContext) -> Iterator[Any]:
        open_, entry = self._open(requests, "source", context)
        try:
            task = _call("create task", entry.connector.task)
        except TaskError as e:
            yield pb.SourceResponse(error=e.to_proto())
            return
        flow = _SourceFlow()
        outbox = _Outbox()
        _on_end(context, lambda: (flow.close(), outbox.gone()))
        name = f"{open_.connector_name}-{open_.task_id}"
        log.info("source task %s (%s) opened", name, entry.class_name)
        _start_thread(lambda: _read_source_requests(requests, flow), f"source-reader-{name}")
        _start_thread(_SourceDriver(task, open_, flow, outbox).run, f"source-task-{name}")
        yield from outbox
        log.info("source task %s ended", name)

    def sink(self, requests: Iterator[pb.SinkRequest],
             context: grpc.ServicerContext) -> Iterator[Any]:
        open_, entry = self._open(requests, "sink", context)
        try:
            task = _call("create task", entry.connector.task)
        except TaskError as e:
            yield pb.SinkResponse(error=e.to_proto())
            return
        outbox = _Outbox()
        _on_end(context, outbox.gone)
        name = f"{open_.connector_name}-{open_.task_id}"
        log.info("sink task %s (%s) opened", name, entry.class_name)
        _start_thread(_SinkDriver(task, open_, requests, outbox).run, f"sink-task-{name}")
        yield from outbox
        log.info("sink task %s ended", name)

    def shutdown(self, request: pb.ShutdownRequest,
                 context: grpc.ServicerContext) -> pb.ShutdownResponse:
        if not self.shutdown_requested.is_set():
            log.info("shutdown requested")
            self.shutdown_requested.set()
            # Open streams keep the server up until they close; a stuck task must not keep
            # the process alive past the deadline.
            timer = threading.Timer(SHUTDOWN_DEADLINE, _deadline_exit)
            timer.daemon = True
            timer.start()
        return pb.ShutdownResponse()


def _deadline_exit() -> None:
    log.warning("shutdown deadline passed; exiting")
    logging.shutdown()
    os._exit(0)


def _handler(service: _Service) -> grpc.GenericRpcHandler:
    kinds = {
        "Handshake": (grpc.unary_unary_rpc_method_handler, service.handshake),
        "Describe": (grpc.unary_unary_rpc_method_handler, service.describe),
        "Validate": (grpc.unary_unary_rpc_method_handler, service.validate),
        "Plan": (grpc.unary_unary_rpc_method_handler, service.plan),
        "Monitor": (grpc.unary_stream_rpc_method_handler, service.monitor),
        "Heartbeat": (grpc.unary_unary_rpc_method_handler, service.heartbeat),
        "Source": (grpc.stream_stream_rpc_method_handler, service.source),
        "Sink": (grpc.stream_stream_rpc_method_handler, service.sink),
        "Shutdown": (grpc.unary_unary_rpc_method_handler, service.shutdown),
    }
    descriptor = pb.DESCRIPTOR.services_by_name["Connector"]
    handlers = {}
    for method in descriptor.methods:
        make, function = kinds[method.name]  # a KeyError here: the proto gained a method
        request_type = getattr(pb, method.input_type.name)
        handlers[method.name] = make(function, request_deserializer=request_type.FromString,
                                     response_serializer=_serialize)
    return grpc.method_handlers_generic_handler(descriptor.full_name, handlers)


def _exit_with_parent() -> None:
    """The worker holds the write end of our stdin; when it closes, the worker is gone (even
    after SIGKILL), and a connector must not outlive its worker."""

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        log.info("worker went away (stdin closed); exiting")
        logging.shutdown()
        os._exit(0)

    _start_thread(watch, "parent-watch")


def serve(plugin: Plugin) -> None:
    """Serves `plugin` on the socket named by SLUICE_CONNECTOR_SOCKET until the worker calls
    Shutdown (and its streams have closed) or goes away (our stdin closes: the process exits)."""
    path = os.environ.get(ENV_SOCKET)
    if not path:
        raise ConnectorError(
            f"{ENV_SOCKET} is not set: this program is a Sluice connector, started by a worker")
    try:
        os.remove(path)  # a stale socket of an earlier run
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConnectorError(f"remove stale connector socket {path}: {e}") from e
    service = _Service(plugin)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=RPC_THREADS, thread_name_prefix="sluice-rpc"),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.http2.max_frame_size", 1 << 20),
            ("grpc.http2.lookahead_bytes", 16 << 20),
        ],
    )
    server.add_generic_rpc_handlers((_handler(service),))
    try:
        port = server.add_insecure_port(f"unix:{path}")
    except RuntimeError as e:
        raise ConnectorError(f"bind connector socket {path}: {e}") from e
    if port == 0:
        raise ConnectorError(f"bind connector socket {path}: failed")
    server.start()
    _exit_with_parent()
    log.info("plugin %s %s serving on %s", plugin.name, plugin.version, path)
    service.shutdown_requested.wait()
    # Stop accepting calls; the streams the worker already closed end by themselves.
    server.stop(grace=SHUTDOWN_DEADLINE).wait()
    try:
        os.remove(path)
    except OSError:
        pass


_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 1,
}


def _log_level(spec: str | None) -> int:
    """The level of a SLUICE_LOG filter. It has the Rust SDK's syntax ("info",
    "debug,h2=warn"); the first bare level counts, per-target directives are ignored."""
    for part in (spec or "").split(","):
        part = part.strip().lower()
        if part and "=" not in part and part in _LEVELS:
            return _LEVELS[part]
    return logging.INFO


def main(plugin: Plugin) -> NoReturn:
    """Logs to stderr at the level of SLUICE_LOG (default info), serves `plugin`, and exits:
    0 after a Shutdown, 1 with `error: ...` on stderr if it cannot serve."""
    logging.basicConfig(
        stream=sys.stderr,
        level=_log_level(os.environ.get(ENV_LOG)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code = 0
    try:
        serve(plugin)
    except ConnectorError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except Exception as e:  # noqa: BLE001
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit without waiting for threads, as the Rust SDK does: a task stuck in a poll must not
    # keep the process alive.
    os._exit(code)
