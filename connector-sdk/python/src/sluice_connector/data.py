"""Keys, values and headers: Python values to the protocol's `Data` and back.

A `Data` is one of three things (docs/connector-protocol.md §7):

- raw bytes, written to Kafka as they are: pass `bytes` (or `Raw(...)`) as a key or value;
- a structured value with a `Schema`, which the worker's converter serializes: a `Struct`, or
  any value together with a schema (`to_data(value, schema)`, `SourceRecord(value_schema=...)`);
- a schemaless structured value (Kafka Connect's null schema): any other Python value. As in
  Kafka Connect, a dict is a map (with string keys, in JSON), a list an array;
- null: `None`.

Inside structured values `bytes` are BYTES values; only a top-level `bytes` is raw.
Logical types travel in Kafka Connect's physical form: `decimal.Decimal` for Decimal (BYTES),
`datetime.date` for Date, `datetime.time` for Time (INT32) and `datetime.datetime` for
Timestamp (INT64; naive datetimes are taken as UTC).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import math
from collections.abc import Mapping
from typing import Any, Iterable, Sequence

from ._proto import connector_pb2 as pb
from .errors import DataError

DECIMAL = "org.apache.kafka.connect.data.Decimal"
DATE = "org.apache.kafka.connect.data.Date"
TIME = "org.apache.kafka.connect.data.Time"
TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"

_EPOCH_DATE = _dt.date(1970, 1, 1)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
# The largest finite float32, and the milliseconds of a day (Kafka's Time is within one).
_FLOAT32_MAX = 3.4028234663852886e38
_MILLIS_PER_DAY = 86_400_000
_BYTES_LIKE = (bytes, bytearray, memoryview)


class SchemaType(enum.IntEnum):
    INT8 = pb.SCHEMA_TYPE_INT8
    INT16 = pb.SCHEMA_TYPE_INT16
    INT32 = pb.SCHEMA_TYPE_INT32
    INT64 = pb.SCHEMA_TYPE_INT64
    FLOAT32 = pb.SCHEMA_TYPE_FLOAT32
    FLOAT64 = pb.SCHEMA_TYPE_FLOAT64
    BOOLEAN = pb.SCHEMA_TYPE_BOOLEAN
    STRING = pb.SCHEMA_TYPE_STRING
    BYTES = pb.SCHEMA_TYPE_BYTES
    ARRAY = pb.SCHEMA_TYPE_ARRAY
    MAP = pb.SCHEMA_TYPE_MAP
    STRUCT = pb.SCHEMA_TYPE_STRUCT


_INT_BITS = {
    SchemaType.INT8: 8,
    SchemaType.INT16: 16,
    SchemaType.INT32: 32,
    SchemaType.INT64: 64,
}


class Raw:
    """Bytes already in their Kafka wire form: the worker writes them unchanged."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = bytes(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Raw) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Raw({self.data!r})"


class Schema:
    """A Kafka Connect schema. Build one with the class methods, e.g.

        Schema.struct("line", [("line", Schema.string()), ("number", Schema.int64())])

    Treat schemas as immutable: the protocol form is built once and reused for every record.
    """

    __slots__ = (
        "type",
        "optional",
        "name",
        "version",
        "doc",
        "parameters",
        "default",
        "value_schema",
        "key_schema",
        "fields",
        "_proto",
        "_positions",
    )

    def __init__(
        self,
        type: SchemaType,
        *,
        optional: bool = False,
        name: str | None = None,
        version: int | None = None,
        doc: str | None = None,
        parameters: Mapping[str, str] | None = None,
        default: Any = None,
        value_schema: Schema | None = None,
        key_schema: Schema | None = None,
        fields: Iterable[tuple[str, Schema]] = (),
    ):
        self.type = SchemaType(type)
        self.optional = optional
        self.name = name
        self.version = version
        self.doc = doc
        self.parameters = dict(parameters or {})
        self.default = default
        self.value_schema = value_schema
        self.key_schema = key_schema
        self.fields: tuple[tuple[str, Schema], ...] = tuple(fields)
        self._proto: pb.Schema | None = None
        self._positions = {name: i for i, (name, _) in enumerate(self.fields)}
        if self.type == SchemaType.STRUCT:
            for field, schema in self.fields:
                if not isinstance(schema, Schema):
                    raise TypeError(f"field {field!r} of struct {name!r} needs a Schema")
        if self.type == SchemaType.ARRAY and value_schema is None:
            raise TypeError("an array schema needs an element schema")
        if self.type == SchemaType.MAP and (value_schema is None or key_schema is None):
            raise TypeError("a map schema needs a key schema and a value schema")

    # Primitive schemas.
    @classmethod
    def int8(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT8, optional=optional, **kw)

    @classmethod
    def int16(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT16, optional=optional, **kw)

    @classmethod
    def int32(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT32, optional=optional, **kw)

    @classmethod
    def int64(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT64, optional=optional, **kw)

    @classmethod
    def float32(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.FLOAT32, optional=optional, **kw)

    @classmethod
    def float64(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.FLOAT64, optional=optional, **kw)

    @classmethod
    def boolean(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.BOOLEAN, optional=optional, **kw)

    @classmethod
    def string(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.STRING, optional=optional, **kw)

    @classmethod
    def bytes(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.BYTES, optional=optional, **kw)

    # Containers.
    @classmethod
    def array(cls, items: Schema, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.ARRAY, optional=optional, value_schema=items, **kw)

    @classmethod
    def map(cls, keys: Schema, values: Schema, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.MAP, optional=optional, key_schema=keys, value_schema=values, **kw)

    @classmethod
    def struct(
        cls,
        name: str | None,
        fields: Iterable[tuple[str, Schema]],
        optional: bool = False,
        **kw: Any,
    ) -> Schema:
        return cls(SchemaType.STRUCT, optional=optional, name=name, fields=fields, **kw)

    # Kafka Connect's logical types.
    @classmethod
    def decimal(cls, scale: int, optional: bool = False, **kw: Any) -> Schema:
        parameters = {"scale": str(scale), **kw.pop("parameters", {})}
        return cls(SchemaType.BYTES, optional=optional, name=DECIMAL, version=1,
                   parameters=parameters, **kw)

    @classmethod
    def date(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT32, optional=optional, name=DATE, version=1, **kw)

    @classmethod
    def time(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT32, optional=optional, name=TIME, version=1, **kw)

    @classmethod
    def timestamp(cls, optional: bool = False, **kw: Any) -> Schema:
        return cls(SchemaType.INT64, optional=optional, name=TIMESTAMP, version=1, **kw)

    def field(self, name: str) -> Schema | None:
        """The schema of a struct field, None if there is no such field."""
        position = self._positions.get(name)
        return None if position is None else self.fields[position][1]

    @property
    def field_names(self) -> list[str]:
        return [name for name, _ in self.fields]

    @property
    def proto(self) -> pb.Schema:
        """The protocol form, built on first use."""
        if self._proto is None:
            proto = pb.Schema(type=int(self.type), optional=self.optional,
                              parameters=self.parameters)
            if self.name is not None:
                proto.name = self.name
            if self.version is not None:
                proto.version = self.version
            if self.doc is not None:
                proto.doc = self.doc
            if self.default is not None:
                fill_value(proto.default_value, self.default, self, "default")
            if self.value_schema is not None:
                proto.value_schema.CopyFrom(self.value_schema.proto)
            if self.key_schema is not None:
                proto.key_schema.CopyFrom(self.key_schema.proto)
            for name, schema in self.fields:
                proto.fields.add(name=name, schema=schema.proto)
            self._proto = proto
        return self._proto

    @classmethod
    def from_proto(cls, proto: pb.Schema) -> Schema:
        """A Schema from its protocol form (as a sink receives it)."""
        try:
            kind = SchemaType(proto.type)
        except ValueError:
            raise DataError(f"unknown schema type {proto.type}") from None
        value_schema = cls.from_proto(proto.value_schema) if proto.HasField("value_schema") else None
        key_schema = cls.from_proto(proto.key_schema) if proto.HasField("key_schema") else None
        schema = cls.__new__(cls)
        schema.type = kind
        schema.optional = proto.optional
        schema.name = proto.name if proto.HasField("name") else None
        schema.version = proto.version if proto.HasField("version") else None
        schema.doc = proto.doc if proto.HasField("doc") else None
        schema.parameters = dict(proto.parameters)
        schema.value_schema = value_schema
        schema.key_schema = key_schema
        schema.fields = tuple((f.name, cls.from_proto(f.schema)) for f in proto.fields)
        schema._positions = {name: i for i, (name, _) in enumerate(schema.fields)}
        schema._proto = proto
        schema.default = (
            from_value(proto.default_value, proto) if proto.HasField("default_value") else None
        )
        return schema

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.proto == self.proto

    def __hash__(self) -> int:
        return hash((self.type, self.name, self.fields))

    def __repr__(self) -> str:
        parts = [self.type.name]
        if self.name:
            parts.append(repr(self.name))
        if self.optional:
            parts.append("optional")
        if self.fields:
            parts.append("{" + ", ".join(f"{n}: {s!r}" for n, s in self.fields) + "}")
        return f"Schema({' '.join(parts)})"


class Struct:
    """A value of a STRUCT schema: field values by name, in the schema's order.

        Struct(schema, {"line": "hello", "number": 1})
        Struct(schema, line="hello", number=1)
    """

    __slots__ = ("schema", "_values")

    def __init__(self, schema: Schema, values: Mapping[str, Any] | Sequence[Any] | None = None,
                 **fields: Any):
        if schema.type != SchemaType.STRUCT:
            raise DataError(f"a Struct needs a STRUCT schema, not {schema.type.name}")
        self.schema = schema
        self._values: list[Any] = [None] * len(schema.fields)
        if isinstance(values, Mapping):
            fields = {**values, **fields}
        elif values is not None:
            if len(values) != len(schema.fields):
                raise DataError(
                    f"struct {schema.name or ''} has {len(schema.fields)} fields, "
                    f"got {len(values)} values"
                )
            self._values = list(values)
        for name, value in fields.items():
            self[name] = value

    def _position(self, name: str) -> int:
        position = self.schema._positions.get(name)
        if position is None:
            raise KeyError(f"struct {self.schema.name or ''} has no field {name!r}")
        return position

    def __getitem__(self, name: str) -> Any:
        return self._values[self._position(name)]

    def __setitem__(self, name: str, value: Any) -> None:
        self._values[self._position(name)] = value

    def get(self, name: str, default: Any = None) -> Any:
        position = self.schema._positions.get(name)
        return default if position is None else self._values[position]

    def values(self) -> list[Any]:
        return list(self._values)

    def to_dict(self) -> dict[str, Any]:
        return dict(zip(self.schema.field_names, self._values))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Struct) and other.schema == self.schema
                and other._values == self._values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(self.schema.field_names, self._values))
        return f"Struct{{{fields}}}"


# -------------------------------------------------------------------------------------------
# Python -> protocol


def to_data(value: Any, schema: Schema | None = None) -> pb.Data:
    """The protocol form of a key, value or header value (see the module's documentation)."""
    data = pb.Data()
    fill_data(data, value, schema)
    return data


def fill_data(data: pb.Data, value: Any, schema: Schema | None = None) -> None:
    """Writes `value` into the (empty) `data` message in place, which spares a copy when `data`
    is a field of a record being built."""
    kind = type(value)
    if schema is None:
        if kind is bytes:
            data.raw = value
            return
        if value is None:
            return
        if kind is pb.Data:
            data.CopyFrom(value)
            return
        if kind is Raw:
            data.raw = value.data
            return
        if isinstance(value, (bytearray, memoryview)):
            data.raw = bytes(value)
            return
        if isinstance(value, Struct):
            schema = value.schema
    structured = data.structured
    if schema is not None:
        structured.schema.CopyFrom(schema.proto)
    fill_value(structured.value, value, schema, "value")


def _int(value: Any, bits: int, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{path}: expected an integer, got {type(value).__name__}")
    limit = 1 << (bits - 1)
    if not -limit <= value < limit:
        raise DataError(f"{path}: {value} does not fit in {bits} bits")
    return value


def _decimal_bytes(value: Any, schema: Schema, path: str) -> bytes:
    """A Decimal as Kafka Connect's unscaled two's-complement big-endian integer."""
    try:
        scale = int(schema.parameters.get("scale", "0"))
    except ValueError:
        raise DataError(f"{path}: decimal schema has a bad scale") from None
    if not isinstance(value, decimal.Decimal):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise DataError(f"{path}: expected a decimal.Decimal, got {type(value).__name__}")
        try:
            value = decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise DataError(f"{path}: {value!r} is not a decimal number") from None
    if not value.is_finite():
        raise DataError(f"{path}: {value} has no decimal form")
    # Exact integer arithmetic: Decimal operations would round to the context's precision.
    sign, digits, exponent = value.as_tuple()
    number = int("".join(map(str, digits)) or "0")
    shift = exponent + scale  # type: ignore[operator]
    if shift >= 0:
        number *= 10**shift
    elif number % 10**-shift:
        raise DataError(f"{path}: {value} has more than {scale} decimal places")
    else:
        number //= 10**-shift
    if sign:
        number = -number
    length = max(1, (number + (number < 0)).bit_length() // 8 + 1)
    return number.to_bytes(length, "big", signed=True)


def fill_value(target: pb.Value, value: Any, schema: Schema | None, path: str) -> None:
    """Writes `value` into `target` as a value of `schema` (None: schemaless)."""
    if schema is None:
        _fill_schemaless(target, value, path)
        return
    if value is None:
        if not schema.optional:
            raise DataError(f"{path}: null for a required {schema.type.name} schema")
        target.null = True
        return
    kind = schema.type
    logical = schema.name
    if kind in _INT_BITS:
        if logical == DATE and isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            value = (value - _EPOCH_DATE).days
        elif logical == TIME and isinstance(value, _dt.time):
            value = ((value.hour * 60 + value.minute) * 60 + value.second) * 1000 \
                + value.microsecond // 1000
        elif logical == TIMESTAMP and isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=_dt.timezone.utc)
            value = (value - _EPOCH) // _dt.timedelta(milliseconds=1)
        target.int = _int(value, _INT_BITS[kind], path)
    elif kind == SchemaType.STRING:
        if not isinstance(value, str):
            raise DataError(f"{path}: expected a string, got {type(value).__name__}")
        target.string = value
    elif kind == SchemaType.BOOLEAN:
        if not isinstance(value, bool):
            raise DataError(f"{path}: expected a boolean, got {type(value).__name__}")
        target.boolean = value
    elif kind in (SchemaType.FLOAT32, SchemaType.FLOAT64):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{path}: expected a number, got {type(value).__name__}")
        if kind == SchemaType.FLOAT32:
            # A finite number beyond float32's range would arrive as an infinity.
            if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
                raise DataError(f"{path}: {value} does not fit in a FLOAT32")
            target.float32 = float(value)
        else:
            target.float64 = float(value)
    elif kind == SchemaType.BYTES:
        if logical == DECIMAL:
            target.bytes = _decimal_bytes(value, schema, path)
        elif isinstance(value, _BYTES_LIKE):
            target.bytes = bytes(value)
        else:
            raise DataError(f"{path}: expected bytes, got {type(value).__name__}")
    elif kind == SchemaType.ARRAY:
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{path}: expected a list, got {type(value).__name__}")
        items = target.array.items
        for i, item in enumerate(value):
            fill_value(items.add(), item, schema.value_schema, f"{path}[{i}]")
        if not value:
            target.array.SetInParent()
    elif kind == SchemaType.MAP:
        if not isinstance(value, Mapping):
            raise DataError(f"{path}: expected a dict, got {type(value).__name__}")
        entries = target.map.entries
        for k, v in value.items():
            entry = entries.add()
            fill_value(entry.key, k, schema.key_schema, f"{path} key")
            fill_value(entry.value, v, schema.value_schema, f"{path}[{k!r}]")
        if not value:
            target.map.SetInParent()
    elif kind == SchemaType.STRUCT:
        _fill_struct(target, value, schema, path)


def _fill_struct(target: pb.Value, value: Any, schema: Schema, path: str) -> None:
    if isinstance(value, Struct):
        # An unset field reads as its schema's default, as Kafka's Struct.get does.
        values = [
            field.default if v is None else v
            for v, (_, field) in zip(
                value._values if value.schema is schema
                else [value.get(name) for name, _ in schema.fields],
                schema.fields,
            )
        ]
    elif isinstance(value, Mapping):
        unknown = [k for k in value if k not in schema._positions]
        if unknown:
            raise DataError(f"{path}: struct {schema.name or ''} has no field {unknown[0]!r}")
        values = [value.get(name, field.default) for name, field in schema.fields]
    elif isinstance(value, (list, tuple)):
        if len(value) != len(schema.fields):
            raise DataError(
                f"{path}: struct {schema.name or ''} has {len(schema.fields)} fields, "
                f"got {len(value)} values"
            )
        values = value
    else:
        raise DataError(f"{path}: expected a Struct or dict, got {type(value).__name__}")
    fields = target.struct.fields
    for (name, field), item in zip(schema.fields, values):
        fill_value(fields.add(), item, field, f"{path}.{name}")
    target.struct.SetInParent()


def _fill_schemaless(target: pb.Value, value: Any, path: str) -> None:
    if value is None:
        target.null = True
    elif isinstance(value, bool):
        target.boolean = value
    elif isinstance(value, int):
        target.int = _int(value, 64, path)
    elif isinstance(value, float):
        target.float64 = value
    elif isinstance(value, str):
        target.string = value
    elif isinstance(value, _BYTES_LIKE):
        target.bytes = bytes(value)
    elif isinstance(value, Raw):
        target.bytes = value.data
    elif isinstance(value, Mapping):
        # Kafka Connect's schemaless objects are maps (string keys in JSON).
        entries = target.map.entries
        for k, v in value.items():
            entry = entries.add()
            _fill_schemaless(entry.key, k, f"{path} key")
            _fill_schemaless(entry.value, v, f"{path}[{k!r}]")
        target.map.SetInParent()
    elif isinstance(value, (list, tuple)):
        items = target.array.items
        for i, item in enumerate(value):
            _fill_schemaless(items.add(), item, f"{path}[{i}]")
        target.array.SetInParent()
    elif isinstance(value, Struct):
        # Inside a schemaless value a struct keeps its names, which the worker reads as a map.
        struct = target.struct
        struct.names.extend(value.schema.field_names)
        for (name, field), item in zip(value.schema.fields, value._values):
            fill_value(struct.fields.add(), item, field, f"{path}.{name}")
        struct.SetInParent()
    else:
        raise DataError(f"{path}: {type(value).__name__} has no schemaless form")


# -------------------------------------------------------------------------------------------
# Protocol -> Python


def from_data(data: pb.Data | None) -> Any:
    """The Python value of a key, value or header: None for null, bytes for raw data, and
    structured values as Python values (a struct as a dict in field order, a map as a dict, an
    array as a list, logical types as decimal/datetime values)."""
    if data is None:
        return None
    kind = data.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "raw":
        return data.raw
    structured = data.structured
    schema = structured.schema if structured.HasField("schema") else None
    return from_value(structured.value, schema)


def schema_of(data: pb.Data | None) -> Schema | None:
    """The schema of a structured key or value, None for raw, null and schemaless data."""
    if data is None or data.WhichOneof("kind") != "structured":
        return None
    if not data.structured.HasField("schema"):
        return None
    return Schema.from_proto(data.structured.schema)


def _hashable(value: Any) -> Any:
    """A map key Python can hash: lists become tuples, dicts tuples of pairs."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items())
    return value


def from_value(value: pb.Value, schema: pb.Schema | None) -> Any:
    """Decodes one value; never fails: a value that does not match its schema decodes as if it
    were schemaless, and a logical value out of Python's range stays in its physical form."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null":
        return None
    logical = schema.name if schema is not None and schema.HasField("name") else None
    if kind == "int":
        number = value.int
        try:
            if logical == DATE:
                return _EPOCH_DATE + _dt.timedelta(days=number)
            if logical == TIME and 0 <= number < _MILLIS_PER_DAY:
                return (_dt.datetime.min + _dt.timedelta(milliseconds=number)).time()
            if logical == TIMESTAMP:
                return _EPOCH + _dt.timedelta(milliseconds=number)
        except (OverflowError, ValueError):
            pass
        return number
    if kind == "string":
        return value.string
    if kind == "bytes":
        if logical == DECIMAL:
            try:
                scale = int(schema.parameters.get("scale", "0"))  # type: ignore[union-attr]
                unscaled = int.from_bytes(value.bytes, "big", signed=True)
                digits = tuple(int(d) for d in str(abs(unscaled)))
                return decimal.Decimal((int(unscaled < 0), digits, -scale))
            except (ValueError, decimal.DecimalException):
                pass
        return value.bytes
    if kind == "boolean":
        return value.boolean
    if kind == "float64":
        return value.float64
    if kind == "float32":
        return value.float32
    element = schema.value_schema if schema is not None and schema.HasField("value_schema") else None
    if kind == "array":
        return [from_value(item, element) for item in value.array.items]
    if kind == "map":
        key_schema = schema.key_schema if schema is not None and schema.HasField("key_schema") else None
        return {
            _hashable(from_value(e.key, key_schema)): from_value(e.value, element)
            for e in value.map.entries
        }
    # struct
    struct = value.struct
    if schema is not None and len(schema.fields) >= len(struct.fields) and not struct.names:
        return {
            field.name: from_value(item, field.schema)
            for field, item in zip(schema.fields, struct.fields)
        }
    names = list(struct.names) + [f"field{i}" for i in range(len(struct.names), len(struct.fields))]
    return {name: from_value(item, None) for name, item in zip(names, struct.fields)}
