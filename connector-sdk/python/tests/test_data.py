"""Tests of sluice_connector.data: Python values to the protocol's Data/Schema/Value and back.

The wire forms follow proto/sluice/connector/v1/connector.proto and docs/connector-protocol.md
section 7 (Decimal as unscaled two's-complement big-endian bytes, Date as days since the epoch,
Time as milliseconds of the day, Timestamp as milliseconds since the epoch).
"""

import datetime as dt
import decimal
import unittest

from sluice_connector import (
    DataError,
    Raw,
    Schema,
    SchemaType,
    Struct,
    from_data,
    from_value,
    schema_of,
    to_data,
)
from sluice_connector._proto import connector_pb2 as pb
from sluice_connector.data import DATE, DECIMAL, TIME, TIMESTAMP

D = decimal.Decimal
UTC = dt.timezone.utc
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def wire(message):
    return message.SerializeToString()


def reparse(data):
    """`data` after a trip through its wire form, as the worker would see it."""
    copy = pb.Data()
    copy.ParseFromString(wire(data))
    return copy


class DataErrorCase(unittest.TestCase):
    def assertDataError(self, message, value, schema=None):
        with self.assertRaises(DataError) as cm:
            to_data(value, schema)
        self.assertEqual(str(cm.exception), message)


# ------------------------------------------------------------------------------------------
# Top level: null, raw and structured


class TopLevelTest(unittest.TestCase):
    def test_none_is_null_data(self):
        data = to_data(None)
        self.assertIsNone(data.WhichOneof("kind"))
        self.assertEqual(wire(data), b"")
        self.assertIsNone(from_data(data))
        self.assertIsNone(from_data(pb.Data()))
        self.assertIsNone(from_data(None))

    def test_bytes_are_raw(self):
        data = to_data(b"abc")
        self.assertEqual(data.WhichOneof("kind"), "raw")
        self.assertEqual(wire(data), b"\x0a\x03abc")
        self.assertEqual(from_data(reparse(data)), b"abc")

    def test_raw_bytearray_memoryview_are_raw(self):
        for value in [Raw(b"\x00\xff"), bytearray(b"\x00\xff"), memoryview(b"\x00\xff")]:
            with self.subTest(type=type(value).__name__):
                data = to_data(value)
                self.assertEqual(data.WhichOneof("kind"), "raw")
                self.assertEqual(data.raw, b"\x00\xff")

    def test_empty_bytes_are_raw_not_null(self):
        data = to_data(b"")
        self.assertEqual(data.WhichOneof("kind"), "raw")
        self.assertEqual(from_data(reparse(data)), b"")

    def test_bytes_with_a_schema_are_structured_bytes(self):
        data = to_data(b"abc", Schema.bytes())
        self.assertEqual(data.WhichOneof("kind"), "structured")
        self.assertEqual(data.structured.value.bytes, b"abc")
        self.assertEqual(data.structured.schema.type, pb.SCHEMA_TYPE_BYTES)
        self.assertEqual(from_data(reparse(data)), b"abc")

    def test_schemaless_value_has_no_schema(self):
        data = to_data("hi")
        self.assertEqual(data.WhichOneof("kind"), "structured")
        self.assertFalse(data.structured.HasField("schema"))
        self.assertEqual(wire(data.structured.value), b"\x32\x02hi")
        self.assertIsNone(schema_of(data))
        self.assertEqual(from_data(data), "hi")

    def test_data_passes_through(self):
        original = to_data(5)
        self.assertEqual(to_data(original), original)

    def test_schema_of(self):
        schema = Schema.struct("r", [("a", Schema.int32())])
        self.assertEqual(schema_of(to_data({"a": 1}, schema)), schema)
        self.assertIsNone(schema_of(to_data(b"x")))
        self.assertIsNone(schema_of(to_data(None)))
        self.assertIsNone(schema_of(None))


# ------------------------------------------------------------------------------------------
# Schemaless values


class SchemalessTest(DataErrorCase):
    def test_wire_forms(self):
        # Data.structured (2) { value (2) { ... } }; Value.int is a zig-zag sint64.
        self.assertEqual(wire(to_data(-1)), b"\x12\x04\x12\x02\x18\x01")
        self.assertEqual(wire(to_data(1)), b"\x12\x04\x12\x02\x18\x02")
        self.assertEqual(wire(to_data(0)), b"\x12\x04\x12\x02\x18\x00")
        self.assertEqual(wire(to_data(True)), b"\x12\x04\x12\x02\x10\x01")
        # A oneof member is written even when it holds its default.
        self.assertEqual(wire(to_data(False)), b"\x12\x04\x12\x02\x10\x00")
        self.assertEqual(wire(to_data(1.5).structured.value), b"\x29" + b"\x00" * 6 + b"\xf8\x3f")

    def test_kinds(self):
        cases = [
            (True, "boolean"),
            (False, "boolean"),
            (0, "int"),
            (-5, "int"),
            (1.0, "float64"),
            ("", "string"),
            ([], "array"),
            ({}, "map"),
        ]
        for value, kind in cases:
            with self.subTest(value=value):
                data = to_data(value)
                self.assertEqual(data.structured.value.WhichOneof("kind"), kind)
                back = from_data(reparse(data))
                self.assertEqual(back, value)
                self.assertIs(type(back), type(value))

    def test_int_edges(self):
        for value in [I64_MAX, I64_MIN, -1, 2**31, -(2**31) - 1]:
            with self.subTest(value=value):
                data = to_data(value)
                self.assertEqual(data.structured.value.int, value)
                self.assertEqual(from_data(reparse(data)), value)
        # Zig-zag: the most negative value is the largest varint.
        self.assertEqual(wire(pb.Value(int=I64_MIN)), b"\x18" + b"\xff" * 9 + b"\x01")

    def test_int_out_of_64_bits(self):
        self.assertDataError("value: 9223372036854775808 does not fit in 64 bits", 2**63)
        self.assertDataError("value: -9223372036854775809 does not fit in 64 bits", -(2**63) - 1)

    def test_list(self):
        value = [1, "a", None, 1.5, True, b"\x01", [2], {"k": "v"}]
        data = to_data(value)
        items = data.structured.value.array.items
        self.assertEqual([i.WhichOneof("kind") for i in items],
                         ["int", "string", "null", "float64", "boolean", "bytes", "array", "map"])
        self.assertTrue(items[2].null)
        self.assertEqual(from_data(reparse(data)), value)

    def test_tuple_is_an_array(self):
        self.assertEqual(from_data(to_data((1, 2))), [1, 2])

    def test_raw_inside_is_bytes(self):
        data = to_data([Raw(b"xy")])
        self.assertEqual(data.structured.value.array.items[0].bytes, b"xy")
        self.assertEqual(from_data(data), [b"xy"])

    def test_dict_is_a_map_in_order(self):
        value = {"b": 1, "a": [True], "c": None}
        data = to_data(value)
        entries = data.structured.value.map.entries
        self.assertEqual([e.key.string for e in entries], ["b", "a", "c"])
        self.assertEqual(entries[0].value.int, 1)
        self.assertTrue(entries[2].value.null)
        back = from_data(reparse(data))
        self.assertEqual(back, value)
        self.assertEqual(list(back), ["b", "a", "c"])

    def test_dict_with_non_string_keys(self):
        self.assertEqual(from_data(to_data({1: "one", None: 0})), {1: "one", None: 0})

    def test_struct_inside_schemaless_keeps_names(self):
        schema = Schema.struct("p", [("x", Schema.int32()), ("y", Schema.string(optional=True))])
        data = to_data([Struct(schema, x=1, y=None)])
        struct = data.structured.value.array.items[0].struct
        self.assertEqual(list(struct.names), ["x", "y"])
        self.assertEqual(struct.fields[0].int, 1)
        self.assertTrue(struct.fields[1].null)
        self.assertEqual(from_data(reparse(data)), [{"x": 1, "y": None}])

    def test_struct_inside_schemaless_is_checked_against_its_schema(self):
        schema = Schema.struct("p", [("x", Schema.int8())])
        self.assertDataError("value[0].x: 300 does not fit in 8 bits", [Struct(schema, x=300)])

    def test_values_without_schemaless_form(self):
        self.assertDataError("value: set has no schemaless form", {1, 2})
        self.assertDataError("value: Decimal has no schemaless form", D("1.5"))
        self.assertDataError("value: date has no schemaless form", dt.date(2024, 1, 1))
        self.assertDataError("value[0]['a']: set has no schemaless form", [{"a": {1}}])
        self.assertDataError("value[1]: 9223372036854775808 does not fit in 64 bits", [0, 2**63])


# ------------------------------------------------------------------------------------------
# Primitives with schemas


class PrimitiveSchemaTest(DataErrorCase):
    def test_integer_widths(self):
        for factory, bits in [(Schema.int8, 8), (Schema.int16, 16), (Schema.int32, 32),
                              (Schema.int64, 64)]:
            low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            with self.subTest(bits=bits):
                for value in (low, high):
                    data = to_data(value, factory())
                    self.assertEqual(data.structured.value.int, value)
                    self.assertEqual(from_data(reparse(data)), value)
                self.assertDataError(f"value: {high + 1} does not fit in {bits} bits",
                                     high + 1, factory())
                self.assertDataError(f"value: {low - 1} does not fit in {bits} bits",
                                     low - 1, factory())

    def test_schema_wire_form(self):
        data = to_data(7, Schema.int16())
        self.assertEqual(data.structured.schema.type, pb.SCHEMA_TYPE_INT16)
        self.assertFalse(data.structured.schema.optional)
        self.assertFalse(data.structured.schema.HasField("name"))
        # Data { structured { schema { type: INT16 (2) }, value { int: 7 (zig-zag 14) } } }
        self.assertEqual(wire(data), b"\x12\x08\x0a\x02\x08\x02\x12\x02\x18\x0e")

    def test_integer_type_errors(self):
        self.assertDataError("value: expected an integer, got bool", True, Schema.int32())
        self.assertDataError("value: expected an integer, got float", 1.0, Schema.int64())
        self.assertDataError("value: expected an integer, got str", "1", Schema.int8())

    def test_floats(self):
        data = to_data(1.5, Schema.float32())
        self.assertEqual(data.structured.value.WhichOneof("kind"), "float32")
        self.assertEqual(wire(data.structured.value), b"\x25\x00\x00\xc0\x3f")
        self.assertEqual(from_data(reparse(data)), 1.5)
        # float32 keeps single precision.
        self.assertEqual(from_data(reparse(to_data(0.1, Schema.float32()))), 0.10000000149011612)
        data = to_data(3, Schema.float64())
        self.assertEqual(data.structured.value.WhichOneof("kind"), "float64")
        self.assertIs(type(from_data(data)), float)
        self.assertEqual(from_data(data), 3.0)
        self.assertDataError("value: expected a number, got bool", True, Schema.float64())
        self.assertDataError("value: expected a number, got str", "1.5", Schema.float32())

    def test_float32_overflow_is_an_error(self):
        with self.assertRaises(DataError):
            to_data(1e40, Schema.float32())

    def test_string_boolean_bytes(self):
        self.assertEqual(to_data("é", Schema.string()).structured.value.string, "é")
        self.assertIs(from_data(to_data(False, Schema.boolean())), False)
        self.assertEqual(to_data(bytearray(b"\x01"), Schema.bytes()).structured.value.bytes, b"\x01")
        self.assertDataError("value: expected a string, got int", 1, Schema.string())
        self.assertDataError("value: expected a string, got bytes", b"a", Schema.string())
        self.assertDataError("value: expected a boolean, got int", 1, Schema.boolean())
        self.assertDataError("value: expected bytes, got str", "a", Schema.bytes())

    def test_null_and_optional(self):
        data = to_data(None, Schema.string(optional=True))
        self.assertTrue(data.structured.schema.optional)
        self.assertEqual(data.structured.value.WhichOneof("kind"), "null")
        self.assertIsNone(from_data(reparse(data)))
        self.assertDataError("value: null for a required STRING schema", None, Schema.string())
        self.assertDataError("value: null for a required INT64 schema", None, Schema.int64())


# ------------------------------------------------------------------------------------------
# Arrays and maps with schemas


class ContainerSchemaTest(DataErrorCase):
    def test_array(self):
        schema = Schema.array(Schema.int32())
        data = to_data([1, -2], schema)
        self.assertEqual(data.structured.schema.type, pb.SCHEMA_TYPE_ARRAY)
        self.assertEqual(data.structured.schema.value_schema.type, pb.SCHEMA_TYPE_INT32)
        self.assertFalse(data.structured.schema.HasField("key_schema"))
        self.assertEqual([i.int for i in data.structured.value.array.items], [1, -2])
        self.assertEqual(from_data(reparse(data)), [1, -2])

    def test_empty_array_and_map_are_set(self):
        data = to_data([], Schema.array(Schema.string()))
        self.assertEqual(data.structured.value.WhichOneof("kind"), "array")
        self.assertEqual(from_data(reparse(data)), [])
        data = to_data({}, Schema.map(Schema.string(), Schema.string()))
        self.assertEqual(data.structured.value.WhichOneof("kind"), "map")
        self.assertEqual(from_data(reparse(data)), {})

    def test_array_errors(self):
        schema = Schema.array(Schema.string())
        self.assertDataError("value[1]: expected a string, got int", ["a", 1], schema)
        self.assertDataError("value[0]: null for a required STRING schema", [None], schema)
        self.assertDataError("value: expected a list, got str", "ab", schema)
        self.assertEqual(from_data(to_data([None], Schema.array(Schema.string(optional=True)))),
                         [None])

    def test_map(self):
        schema = Schema.map(Schema.string(), Schema.int64())
        data = to_data({"a": 1, "b": I64_MIN}, schema)
        self.assertEqual(data.structured.schema.key_schema.type, pb.SCHEMA_TYPE_STRING)
        self.assertEqual(data.structured.schema.value_schema.type, pb.SCHEMA_TYPE_INT64)
        entries = data.structured.value.map.entries
        self.assertEqual([(e.key.string, e.value.int) for e in entries], [("a", 1), ("b", I64_MIN)])
        self.assertEqual(from_data(reparse(data)), {"a": 1, "b": I64_MIN})

    def test_map_with_array_keys_decodes_to_tuples(self):
        schema = Schema.map(Schema.array(Schema.int32()), Schema.string())
        data = to_data({(1, 2): "x"}, schema)
        self.assertEqual(from_data(data), {(1, 2): "x"})

    def test_map_errors(self):
        schema = Schema.map(Schema.string(), Schema.int32())
        self.assertDataError("value key: expected a string, got int", {1: 1}, schema)
        self.assertDataError("value['k']: expected an integer, got str", {"k": "v"}, schema)
        self.assertDataError("value: expected a dict, got list", [("k", 1)], schema)

    def test_schema_needs_element_schemas(self):
        with self.assertRaises(TypeError):
            Schema(SchemaType.ARRAY)
        with self.assertRaises(TypeError):
            Schema(SchemaType.MAP, value_schema=Schema.string())


# ------------------------------------------------------------------------------------------
# Structs


INNER = Schema.struct("inner", [("x", Schema.int32())])
RECORD = Schema.struct("rec", [
    ("id", Schema.int64()),
    ("name", Schema.string(optional=True)),
    ("inner", INNER),
    ("tags", Schema.array(Schema.string())),
    ("attrs", Schema.map(Schema.string(), Schema.int32())),
])


class StructTest(DataErrorCase):
    def record(self, **fields):
        values = dict(id=1, name="n", inner=Struct(INNER, x=2), tags=["a"], attrs={"k": 3})
        values.update(fields)
        return Struct(RECORD, values)

    def test_schema_wire_form(self):
        proto = RECORD.proto
        self.assertEqual(proto.type, pb.SCHEMA_TYPE_STRUCT)
        self.assertEqual(proto.name, "rec")
        self.assertEqual([f.name for f in proto.fields], ["id", "name", "inner", "tags", "attrs"])
        self.assertEqual(proto.fields[1].schema.optional, True)
        self.assertEqual(proto.fields[2].schema.name, "inner")
        self.assertEqual(proto.fields[2].schema.fields[0].name, "x")
        self.assertEqual(proto.fields[3].schema.value_schema.type, pb.SCHEMA_TYPE_STRING)
        self.assertEqual(proto.fields[4].schema.key_schema.type, pb.SCHEMA_TYPE_STRING)

    def test_struct_value_wire_form(self):
        data = to_data(self.record(name=None))
        self.assertEqual(data.structured.schema, RECORD.proto)
        struct = data.structured.value.struct
        self.assertEqual(list(struct.names), [])  # names only for schemaless structs
        self.assertEqual([f.WhichOneof("kind") for f in struct.fields],
                         ["int", "null", "struct", "array", "map"])
        self.assertEqual(struct.fields[0].int, 1)
        self.assertEqual(struct.fields[2].struct.fields[0].int, 2)
        self.assertEqual(struct.fields[3].array.items[0].string, "a")
        self.assertEqual(struct.fields[4].map.entries[0].key.string, "k")

    def test_round_trip_gives_dicts_in_field_order(self):
        back = from_data(reparse(to_data(self.record(name=None))))
        self.assertEqual(back, {"id": 1, "name": None, "inner": {"x": 2}, "tags": ["a"],
                                "attrs": {"k": 3}})
        self.assertEqual(list(back), ["id", "name", "inner", "tags", "attrs"])

    def test_dict_and_list_forms_equal_struct_form(self):
        expected = to_data(self.record())
        as_dict = {"id": 1, "name": "n", "inner": {"x": 2}, "tags": ["a"], "attrs": {"k": 3}}
        self.assertEqual(to_data(as_dict, RECORD), expected)
        self.assertEqual(to_data([1, "n", [2], ["a"], {"k": 3}], RECORD), expected)
        self.assertEqual(to_data(Struct(RECORD, [1, "n", Struct(INNER, [2]), ["a"], {"k": 3}])),
                         expected)

    def test_optional_field_may_be_omitted_in_dict(self):
        data = to_data({"id": 1, "inner": {"x": 0}, "tags": [], "attrs": {}}, RECORD)
        self.assertTrue(data.structured.value.struct.fields[1].null)

    def test_dict_uses_field_default(self):
        schema = Schema.struct("s", [("a", Schema.int32()), ("b", Schema.int32(default=5))])
        self.assertEqual(schema.proto.fields[1].schema.default_value.int, 5)
        data = to_data({"a": 1}, schema)
        self.assertEqual([f.int for f in data.structured.value.struct.fields], [1, 5])

    def test_struct_uses_field_default(self):
        schema = Schema.struct("s", [("a", Schema.int32()), ("b", Schema.int32(default=5))])
        data = to_data(Struct(schema, a=1))
        self.assertEqual([f.int for f in data.structured.value.struct.fields], [1, 5])

    def test_missing_required_field(self):
        self.assertDataError("value.inner: null for a required STRUCT schema",
                             Struct(RECORD, id=1, tags=[], attrs={}))
        self.assertDataError("value.id: null for a required INT64 schema",
                             {"inner": {"x": 1}}, RECORD)
        self.assertDataError("value.inner.x: null for a required INT32 schema",
                             self.record(inner={}))

    def test_nested_errors_name_the_path(self):
        self.assertDataError("value.inner.x: expected an integer, got str",
                             self.record(inner={"x": "2"}))
        self.assertDataError("value.tags[1]: expected a string, got int",
                             self.record(tags=["a", 1]))
        self.assertDataError("value.attrs['k']: 2147483648 does not fit in 32 bits",
                             self.record(attrs={"k": 2**31}))
        self.assertDataError("value.inner: expected a Struct or dict, got int", self.record(inner=5))

    def test_shape_errors(self):
        self.assertDataError("value: struct rec has no field 'zzz'", {"zzz": 1}, RECORD)
        self.assertDataError("value: struct rec has 5 fields, got 1 values", [1], RECORD)
        with self.assertRaises(DataError) as cm:
            Struct(RECORD, [1, 2])
        self.assertEqual(str(cm.exception), "struct rec has 5 fields, got 2 values")
        with self.assertRaises(KeyError):
            Struct(RECORD, zzz=1)
        with self.assertRaises(DataError) as cm:
            Struct(Schema.int32())
        self.assertEqual(str(cm.exception), "a Struct needs a STRUCT schema, not INT32")

    def test_struct_accessors(self):
        s = Struct(INNER, x=4)
        self.assertEqual(s["x"], 4)
        self.assertEqual(s.get("nope", "d"), "d")
        self.assertEqual(s.to_dict(), {"x": 4})
        self.assertEqual(s, Struct(INNER, {"x": 4}))
        self.assertNotEqual(s, Struct(INNER, x=5))

    def test_struct_against_another_schema_is_read_by_name(self):
        other = Schema.struct("other", [("y", Schema.string(optional=True)), ("x", Schema.int32())])
        data = to_data(Struct(INNER, x=9), other)
        self.assertEqual(from_data(data), {"y": None, "x": 9})

    def test_schema_from_proto_round_trip(self):
        schema = Schema.struct("rec", [("d", Schema.decimal(2, default=D("1.50"))),
                                       ("n", Schema.int32(optional=True, doc="a number"))],
                               version=3)
        back = Schema.from_proto(reparse(to_data({"d": D("1"), "n": None}, schema)).structured.schema)
        self.assertEqual(back, schema)
        self.assertEqual(back.version, 3)
        self.assertEqual(back.field("d").default, D("1.50"))
        self.assertEqual(back.field("n").doc, "a number")
        self.assertEqual(back.field_names, ["d", "n"])


# ------------------------------------------------------------------------------------------
# Logical types


class DecimalTest(DataErrorCase):
    CASES = [
        # (value, scale, unscaled two's-complement big-endian bytes)
        (D("1.23"), 2, b"\x7b"),
        (D("-1.28"), 2, b"\x80"),
        (D("1.28"), 2, b"\x00\x80"),
        (D("-1.29"), 2, b"\xff\x7f"),
        (D("2.55"), 2, b"\x00\xff"),
        (D("-0.01"), 2, b"\xff"),
        (D("0.00"), 2, b"\x00"),
        (D("327.67"), 2, b"\x7f\xff"),
        (D("-327.68"), 2, b"\x80\x00"),
        (D("327.68"), 2, b"\x00\x80\x00"),
        (D("12345.6789"), 4, b"\x07\x5b\xcd\x15"),
        (D("-12345.6789"), 4, b"\xf8\xa4\x32\xeb"),
        (D("42"), 0, b"\x2a"),
    ]

    def test_encoding_and_decoding(self):
        for value, scale, raw in self.CASES:
            with self.subTest(value=value, scale=scale):
                data = to_data(value, Schema.decimal(scale))
                self.assertEqual(data.structured.value.bytes, raw)
                back = from_data(reparse(data))
                self.assertIsInstance(back, D)
                self.assertEqual(back, value)
                self.assertEqual(back.as_tuple().exponent, -scale)

    def test_schema_wire_form(self):
        proto = Schema.decimal(3).proto
        self.assertEqual(proto.type, pb.SCHEMA_TYPE_BYTES)
        self.assertEqual(proto.name, DECIMAL)
        self.assertEqual(DECIMAL, "org.apache.kafka.connect.data.Decimal")
        self.assertEqual(proto.version, 1)
        self.assertEqual(dict(proto.parameters), {"scale": "3"})

    def test_rescaling(self):
        schema = Schema.decimal(2)
        self.assertEqual(to_data(D("1.5"), schema).structured.value.bytes, b"\x00\x96")   # 150
        self.assertEqual(to_data(D("1.230"), schema).structured.value.bytes, b"\x7b")     # 123
        self.assertEqual(to_data(D("1E+2"), schema).structured.value.bytes, b"\x27\x10")  # 10000
        self.assertEqual(to_data(5, schema).structured.value.bytes, b"\x01\xf4")          # 500
        self.assertEqual(to_data("-1.5", schema).structured.value.bytes, b"\xff\x6a")     # -150
        self.assertEqual(to_data(D("-0"), schema).structured.value.bytes, b"\x00")

    def test_large_value_is_exact(self):
        value = D("123456789012345678901234567890.123456789")
        back = from_data(to_data(value, Schema.decimal(9)))
        self.assertEqual(str(back), "123456789012345678901234567890.123456789")

    def test_errors(self):
        schema = Schema.decimal(2)
        self.assertDataError("value: 1.234 has more than 2 decimal places", D("1.234"), schema)
        self.assertDataError("value: NaN has no decimal form", D("NaN"), schema)
        self.assertDataError("value: Infinity has no decimal form", D("Infinity"), schema)
        self.assertDataError("value: expected a decimal.Decimal, got float", 1.5, schema)
        self.assertDataError("value: expected a decimal.Decimal, got bool", True, schema)
        self.assertDataError("value: decimal schema has a bad scale", D("1"),
                             Schema(SchemaType.BYTES, name=DECIMAL, parameters={"scale": "x"}))

    def test_bad_decimal_string_is_a_data_error(self):
        with self.assertRaises(DataError) as cm:
            to_data("abc", Schema.decimal(2))
        self.assertTrue(str(cm.exception).startswith("value: "), str(cm.exception))

    def test_undecodable_decimal_stays_bytes(self):
        schema = Schema(SchemaType.BYTES, name=DECIMAL, parameters={"scale": "x"}).proto
        self.assertEqual(from_value(pb.Value(bytes=b"\x01"), schema), b"\x01")


class DateTimeTest(DataErrorCase):
    def test_date(self):
        schema = Schema.date()
        self.assertEqual((schema.proto.type, schema.proto.name, schema.proto.version),
                         (pb.SCHEMA_TYPE_INT32, DATE, 1))
        for value, days in [(dt.date(1970, 1, 1), 0), (dt.date(2024, 2, 29), 19782),
                            (dt.date(1969, 12, 31), -1), (dt.date(1900, 1, 1), -25567)]:
            with self.subTest(value=value):
                data = to_data(value, schema)
                self.assertEqual(data.structured.value.int, days)
                self.assertEqual(from_data(reparse(data)), value)
        # Plain integers are the physical form.
        self.assertEqual(from_data(to_data(1, schema)), dt.date(1970, 1, 2))
        self.assertDataError("value: expected an integer, got datetime",
                             dt.datetime(2024, 1, 1), schema)

    def test_date_out_of_python_range_stays_int(self):
        self.assertEqual(from_value(pb.Value(int=10**9), Schema.date().proto), 10**9)

    def test_time(self):
        schema = Schema.time()
        self.assertEqual((schema.proto.type, schema.proto.name, schema.proto.version),
                         (pb.SCHEMA_TYPE_INT32, TIME, 1))
        data = to_data(dt.time(12, 34, 56, 789000), schema)
        self.assertEqual(data.structured.value.int, 45296789)
        self.assertEqual(from_data(reparse(data)), dt.time(12, 34, 56, 789000))
        self.assertEqual(to_data(dt.time(0, 0), schema).structured.value.int, 0)
        # Microseconds are truncated to milliseconds.
        data = to_data(dt.time(23, 59, 59, 999999), schema)
        self.assertEqual(data.structured.value.int, 86399999)
        self.assertEqual(from_data(data), dt.time(23, 59, 59, 999000))
        self.assertEqual(from_value(pb.Value(int=-1), schema.proto), -1)
        self.assertDataError("value: expected an integer, got str", "12:00", schema)

    def test_time_of_a_day_or_more_stays_int(self):
        self.assertEqual(from_value(pb.Value(int=86400000), Schema.time().proto), 86400000)

    def test_timestamp(self):
        schema = Schema.timestamp()
        self.assertEqual((schema.proto.type, schema.proto.name, schema.proto.version),
                         (pb.SCHEMA_TYPE_INT64, TIMESTAMP, 1))
        aware = dt.datetime(2024, 2, 29, 12, 0, 0, 123000, tzinfo=UTC)
        data = to_data(aware, schema)
        self.assertEqual(data.structured.value.int, 1709208000123)
        back = from_data(reparse(data))
        self.assertEqual(back, aware)
        self.assertEqual(back.tzinfo, UTC)
        # Naive datetimes are taken as UTC.
        self.assertEqual(to_data(dt.datetime(2000, 1, 1), schema).structured.value.int,
                         946684800000)
        # Other time zones are converted.
        plus_one = dt.timezone(dt.timedelta(hours=1))
        self.assertEqual(to_data(dt.datetime(2000, 1, 1, 1, tzinfo=plus_one), schema)
                         .structured.value.int, 946684800000)
        # Before the epoch, sub-millisecond parts round down (toward the past).
        self.assertEqual(to_data(dt.datetime(1969, 12, 31, 23, 59, 59, 999500), schema)
                         .structured.value.int, -1)
        self.assertEqual(from_data(to_data(-1, schema)),
                         dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
        self.assertEqual(from_value(pb.Value(int=I64_MAX), schema.proto), I64_MAX)
        self.assertDataError("value: expected an integer, got date", dt.date(2000, 1, 1), schema)

    def test_logical_types_inside_containers(self):
        schema = Schema.struct("ev", [
            ("at", Schema.timestamp()),
            ("days", Schema.array(Schema.date())),
            ("prices", Schema.map(Schema.string(), Schema.decimal(1, optional=True))),
        ])
        value = {"at": dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
                 "days": [dt.date(1970, 1, 3)],
                 "prices": {"a": D("-0.5"), "b": None}}
        data = to_data(value, schema)
        fields = data.structured.value.struct.fields
        self.assertEqual(fields[0].int, 1000)
        self.assertEqual(fields[1].array.items[0].int, 2)
        self.assertEqual(fields[2].map.entries[0].value.bytes, b"\xfb")
        self.assertTrue(fields[2].map.entries[1].value.null)
        self.assertEqual(from_data(reparse(data)), value)


if __name__ == "__main__":
    unittest.main()
