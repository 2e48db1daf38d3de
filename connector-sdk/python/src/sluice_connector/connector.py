"""What every connector class declares (names, configuration, how it splits work), and the
plugin that lists the classes one executable serves."""

from __future__ import annotations

import enum
import threading
from typing import Any, Callable, Iterable, Mapping, Sequence

from ._proto import connector_pb2 as pb
from .config import Config, ConfigDef, FieldError
from .task import SinkTask, SourceTask


class ExactlyOnceSupport(enum.IntEnum):
    UNSPECIFIED = pb.EXACTLY_ONCE_SUPPORT_UNSPECIFIED
    SUPPORTED = pb.EXACTLY_ONCE_SUPPORT_SUPPORTED
    UNSUPPORTED = pb.EXACTLY_ONCE_SUPPORT_UNSUPPORTED


class Reconfigure:
    """Asks the worker to plan this connector's tasks again (Kafka Connect's
    `requestTaskReconfiguration`). Given to `Connector.monitor`."""

    def __init__(self, send: Callable[[str], bool]):
        self._send = send
        self._closed = threading.Event()

    def request(self, reason: str) -> bool:
        """Asks for a new plan; False once the worker stopped listening (the connector moved
        or stopped): a watcher should then end."""
        if self._closed.is_set():
            return False
        return self._send(reason)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleeps up to `timeout` seconds, waking early when the worker stops listening;
        True once it has."""
        return self._closed.wait(timeout)

    def _close(self) -> None:
        self._closed.set()


class Connector:
    """Base of every connector class. Set the class attributes; override the methods.

    `class_name` is what users put in `connector.class` (default: the Python class name);
    `aliases` are other accepted names, e.g. Kafka Connect's fully qualified class names.
    """

    class_name: str = ""
    aliases: Sequence[str] = ()
    version: str = ""
    documentation: str = ""

    def config_defs(self) -> Sequence[ConfigDef]:
        """The configuration keys this connector understands."""
        return []

    def validate(self, config: Config) -> Iterable[FieldError | tuple[str, str]]:
        """One (name, message) per problem, [] when valid; messages lowercase without a
        trailing period. The default checks presence, types and valid values against
        `config_defs()`. Framework keys (name, tasks.max, ...) are the worker's business."""
        return config.validate_against(self.config_defs())

    def plan(self, config: Config, max_tasks: int) -> Sequence[Mapping[str, Any]]:
        """Between 1 and `max_tasks` task configurations; task i runs with the i-th. The SDK
        drops any beyond `max_tasks`. Raise TaskError for a configuration that cannot be
        planned (the worker gets INVALID_ARGUMENT with its message). Default: one task with
        the connector's configuration."""
        return [config]

    def monitor(self, config: Config, reconfigure: Reconfigure) -> None:
        """Watches the source system while the connector instance is assigned to this process,
        on a thread of its own: call `reconfigure.request(reason)` when the tasks should be
        planned again, and return once `reconfigure.wait(interval)` is True (the worker
        stopped listening). Returning ends the worker's Monitor stream; the default returns at
        once: the connector never asks."""
        del config, reconfigure


class SourceConnector(Connector):
    """A connector that brings data from an external system into Kafka."""

    # Whether the tasks can run exactly-once: every record carries the source offset that
    # resumes right after it, so records committed with their offsets are never read again.
    exactly_once_support: ExactlyOnceSupport = ExactlyOnceSupport.UNSPECIFIED
    # Whether the tasks mark transaction boundaries (SourceRecord.transaction), for
    # `transaction.boundary=connector`.
    defines_transaction_boundaries: bool = False

    def task(self) -> SourceTask:
        """A new task; called once per task stream."""
        raise NotImplementedError("a SourceConnector must implement task")


class SinkConnector(Connector):
    """A connector that writes Kafka records to an external system."""

    def task(self) -> SinkTask:
        """A new task; called once per task stream."""
        raise NotImplementedError("a SinkConnector must implement task")


def _attribute(connector: Connector, name: str, default: Any) -> Any:
    """A declared attribute; a method of that name (Rust style) is called."""
    value = getattr(connector, name, default)
    return value() if callable(value) else value


class _Entry:
    """One connector class of a plugin, with its declarations read once."""

    def __init__(self, connector: Connector, kind: int):
        self.connector = connector
        self.kind = kind
        self.class_name = str(_attribute(connector, "class_name", "") or type(connector).__name__)
        self.aliases = [str(a) for a in _attribute(connector, "aliases", ())]
        self.names = {self.class_name, *self.aliases}

    def info(self) -> pb.ConnectorClass:
        c = self.connector
        info = pb.ConnectorClass(
            class_name=self.class_name,
            aliases=self.aliases,
            type=self.kind,
            version=str(_attribute(c, "version", "")),
            documentation=str(_attribute(c, "documentation", "")),
        )
        if self.kind == pb.CONNECTOR_TYPE_SOURCE:
            info.exactly_once = int(_attribute(c, "exactly_once_support",
                                               ExactlyOnceSupport.UNSPECIFIED))
            info.defines_transaction_boundaries = bool(
                _attribute(c, "defines_transaction_boundaries", False))
        return info


class Plugin:
    """An executable's inventory: the connector classes it serves.

        main(Plugin("my-plugin", "1.0").source(MySource()).sink(MySink()))
    """

    def __init__(self, name: str, version: str = ""):
        self.name = name
        self.version = version
        self._entries: list[_Entry] = []

    def source(self, connector: SourceConnector) -> Plugin:
        if not isinstance(connector, SourceConnector):
            raise TypeError(f"{type(connector).__name__} is not a SourceConnector")
        return self._add(_Entry(connector, pb.CONNECTOR_TYPE_SOURCE))

    def sink(self, connector: SinkConnector) -> Plugin:
        if not isinstance(connector, SinkConnector):
            raise TypeError(f"{type(connector).__name__} is not a SinkConnector")
        return self._add(_Entry(connector, pb.CONNECTOR_TYPE_SINK))

    def _add(self, entry: _Entry) -> Plugin:
        for other in self._entries:
            clash = other.names & entry.names
            if clash:
                raise ValueError(f"plugin {self.name} serves {sorted(clash)[0]!r} twice")
        self._entries.append(entry)
        return self

    @property
    def connectors(self) -> list[Connector]:
        return [e.connector for e in self._entries]

    def find(self, class_name: str) -> _Entry | None:
        """The class answering to `class_name` (its name or an alias, case-sensitive)."""
        for entry in self._entries:
            if class_name in entry.names:
                return entry
        return None

    def info(self) -> pb.PluginInfo:
        return pb.PluginInfo(name=self.name, version=self.version,
                             connectors=[e.info() for e in self._entries])
