"""Connector configurations: a flat string map, typed access and validation against definitions.

The checks and messages are those of the Rust SDK (connector-sdk/src/config.rs), so a
configuration is judged the same whichever language its connector is written in.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Iterable, NamedTuple, Sequence

from ._proto import connector_pb2 as pb
from .errors import TaskError


class ConfigType(enum.IntEnum):
    STRING = pb.CONFIG_TYPE_STRING
    INT = pb.CONFIG_TYPE_INT
    LONG = pb.CONFIG_TYPE_LONG
    DOUBLE = pb.CONFIG_TYPE_DOUBLE
    BOOLEAN = pb.CONFIG_TYPE_BOOLEAN
    LIST = pb.CONFIG_TYPE_LIST
    CLASS = pb.CONFIG_TYPE_CLASS
    # A secret: workers and controllers never log it or return it in plain text.
    PASSWORD = pb.CONFIG_TYPE_PASSWORD


class Importance(enum.IntEnum):
    HIGH = pb.IMPORTANCE_HIGH
    MEDIUM = pb.IMPORTANCE_MEDIUM
    LOW = pb.IMPORTANCE_LOW


def _text(value: object) -> str:
    """A default or valid value as configuration text (booleans as Kafka writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


class ConfigDef:
    """One configuration key a connector understands. `default=None` makes the key required;
    any other default (a string, number, boolean or list) is sent as its configuration text."""

    __slots__ = (
        "name",
        "type",
        "default",
        "importance",
        "documentation",
        "group",
        "display_name",
        "valid_values",
    )

    def __init__(
        self,
        name: str,
        type: ConfigType = ConfigType.STRING,
        default: object = None,
        importance: Importance = Importance.MEDIUM,
        documentation: str = "",
        group: str = "",
        display_name: str = "",
        valid_values: Sequence[object] = (),
    ):
        self.name = name
        self.type = ConfigType(type)
        self.default = None if default is None else _text(default)
        self.importance = Importance(importance)
        self.documentation = documentation
        self.group = group
        self.display_name = display_name
        self.valid_values = [_text(v) for v in valid_values]

    @property
    def required(self) -> bool:
        return self.default is None

    def to_proto(self) -> pb.ConfigDef:
        proto = pb.ConfigDef(
            name=self.name,
            type=int(self.type),
            importance=int(self.importance),
            documentation=self.documentation,
            group=self.group,
            display_name=self.display_name,
            valid_values=self.valid_values,
        )
        if self.default is not None:
            proto.default_value = self.default
        return proto

    @classmethod
    def from_proto(cls, proto: pb.ConfigDef) -> "ConfigDef":
        try:
            kind = ConfigType(proto.type)
        except ValueError:
            kind = ConfigType.STRING
        try:
            importance = Importance(proto.importance)
        except ValueError:
            importance = Importance.MEDIUM
        return cls(
            proto.name,
            kind,
            proto.default_value if proto.HasField("default_value") else None,
            importance,
            proto.documentation,
            proto.group,
            proto.display_name,
            list(proto.valid_values),
        )

    def __repr__(self) -> str:
        return f"ConfigDef({self.name!r}, {self.type.name}, default={self.default!r})"


class FieldError(NamedTuple):
    """A problem with one configuration key: its name and a lowercase message without a
    trailing period."""

    name: str
    message: str


def _quote(text: str) -> str:
    """Quotes a value the way the Rust SDK's messages do (`{:?}`): double quotes, escapes."""
    return json.dumps(text, ensure_ascii=False)


_INTEGER = re.compile(r"[+-]?[0-9]+")
# What Rust's f64::from_str accepts: decimal and exponent forms, inf, infinity and nan.
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.IGNORECASE,
)


def _parse_int(text: str, bits: int) -> int | None:
    """An integer of `bits` bits as Rust's `str::parse` reads it (no spaces, no underscores)."""
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    limit = 1 << (bits - 1)
    return value if -limit <= value < limit else None


def _parse_float(text: str) -> float | None:
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)


def _parse_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


_REQUIRED = object()


def _missing(key: str) -> str:
    return f"missing required configuration {_quote(key)} which has no default value"


class Config(dict):
    """A connector or task configuration, Kafka Connect style: string keys to string values.

    A plain `dict` with typed getters. The getters treat an absent or blank value as absent:
    they return `default`, or raise TaskError naming the key when no default is given; a value
    of the wrong type raises TaskError naming the key and the value.
    """

    def required(self, key: str) -> str:
        """The value of a key that must be present and not blank."""
        value = self.get(key)
        if value is None or not value.strip():
            raise TaskError(_missing(key))
        return value

    def _raw(self, key: str, default: object) -> str | None:
        value = self.get(key)
        if value is None or not value.strip():
            if default is _REQUIRED:
                raise TaskError(_missing(key))
            return None
        return value.strip()

    def _invalid(self, key: str, raw: str) -> TaskError:
        return TaskError(f"invalid value {_quote(raw)} for configuration {key}")

    def get_str(self, key: str, default: object = _REQUIRED) -> str | None:
        raw = self._raw(key, default)
        return default if raw is None else self[key]

    def get_int(self, key: str, default: object = _REQUIRED) -> int | None:
        """A 64-bit integer (INT and LONG keys)."""
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        value = _parse_int(raw, 64)
        if value is None:
            raise self._invalid(key, raw)
        return value

    def get_float(self, key: str, default: object = _REQUIRED) -> float | None:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        value = _parse_float(raw)
        if value is None:
            raise self._invalid(key, raw)
        return value

    def get_bool(self, key: str, default: object = _REQUIRED) -> bool | None:
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        value = _parse_bool(raw)
        if value is None:
            raise self._invalid(key, raw)
        return value

    def get_list(self, key: str, default: object = _REQUIRED) -> list[str] | None:
        """A LIST key: comma-separated items, trimmed, empty items dropped."""
        raw = self._raw(key, default)
        if raw is None:
            return default  # type: ignore[return-value]
        return [item.strip() for item in raw.split(",") if item.strip()]

    def validate_against(self, defs: Iterable[ConfigDef | pb.ConfigDef]) -> list[FieldError]:
        """Kafka Connect's checks: required keys present, values of the declared type and among
        the valid values. Keys without a definition are left to the framework."""
        errors = []
        for definition in defs:
            if isinstance(definition, pb.ConfigDef):
                definition = ConfigDef.from_proto(definition)
            value = self.get(definition.name)
            if value is None:
                if definition.default is None:
                    errors.append(FieldError(definition.name, _missing(definition.name)))
                continue
            message = _type_error(definition, value)
            if message is not None:
                errors.append(FieldError(definition.name, message))
        return errors


def _type_error(definition: ConfigDef, value: str) -> str | None:
    trimmed = value.strip()
    kind = definition.type
    if kind == ConfigType.INT:
        ok, expected = _parse_int(trimmed, 32) is not None, "a 32-bit integer"
    elif kind == ConfigType.LONG:
        ok, expected = _parse_int(trimmed, 64) is not None, "a 64-bit integer"
    elif kind == ConfigType.DOUBLE:
        ok, expected = _parse_float(trimmed) is not None, "a number"
    elif kind == ConfigType.BOOLEAN:
        ok, expected = _parse_bool(trimmed) is not None, "true or false"
    else:
        ok, expected = True, ""
    if not ok:
        return f"invalid value {_quote(value)}: expected {expected}"
    if definition.valid_values and trimmed not in definition.valid_values:
        return f"invalid value {_quote(value)}: must be one of {', '.join(definition.valid_values)}"
    return None

