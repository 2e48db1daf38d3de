"""The Python connector SDK of Sluice.

Implement a SourceConnector (with a SourceTask) or a SinkConnector (with a SinkTask), list
them in a Plugin and call main(plugin): the SDK speaks the connector protocol
(docs/connector-protocol.md) on the socket the worker gives it.
"""

from ._proto import connector_pb2 as proto
from .config import Config, ConfigDef, ConfigType, FieldError, Importance
from .connector import (
    Connector,
    ExactlyOnceSupport,
    Plugin,
    Reconfigure,
    SinkConnector,
    SourceConnector,
)
from .data import Raw, Schema, SchemaType, Struct, from_data, from_value, schema_of, to_data
from .errors import DataError, TaskError
from .serve import PROTOCOL_VERSIONS, ConnectorError, main, serve
from .task import (
    ErrantRecordReporter,
    SinkRecord,
    SinkTask,
    SinkTaskContext,
    SourceRecord,
    SourceTask,
    SourceTaskContext,
    TopicPartition,
    TopicPartitionOffset,
    TransactionBoundary,
)

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ConfigDef",
    "ConfigType",
    "Connector",
    "ConnectorError",
    "DataError",
    "ErrantRecordReporter",
    "ExactlyOnceSupport",
    "FieldError",
    "Importance",
    "PROTOCOL_VERSIONS",
    "Plugin",
    "Raw",
    "Reconfigure",
    "Schema",
    "SchemaType",
    "SinkConnector",
    "SinkRecord",
    "SinkTask",
    "SinkTaskContext",
    "SourceConnector",
    "SourceRecord",
    "SourceTask",
    "SourceTaskContext",
    "Struct",
    "TaskError",
    "TopicPartition",
    "TopicPartitionOffset",
    "TransactionBoundary",
    "from_data",
    "from_value",
    "main",
    "proto",
    "schema_of",
    "serve",
    "to_data",
]
