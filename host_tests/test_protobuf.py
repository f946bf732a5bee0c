"""Portable tests for firmware/apigw/protobuf.py (CPython and the MicroPython unix port).

Byte vectors checked by hand against the encoding guide (protobuf.dev/programming-guides/encoding),
each type's bounds, unknown fields, tables of malformed input and of bad definitions (ProtoError
with a path, never another exception), encode_into() at every buffer size, and on MicroPython the
allocation of encode_into() (none under heap_lock) and decode(). Interop with Google's protobuf
is in cpython/test_protobuf_interop.py.
"""

from apigw.protobuf import MessageSet, ProtoError
from check import raises, requires_micropython

T = {
    "t.All": {
        "fields": {
            "i32": {"number": 1, "type": "int32"},
            "i64": {"number": 2, "type": "int64"},
            "u32": {"number": 3, "type": "uint32"},
            "u64": {"number": 4, "type": "uint64"},
            "s32": {"number": 5, "type": "sint32"},
            "s64": {"number": 6, "type": "sint64"},
            "b": {"number": 7, "type": "bool"},
            "e": {"number": 8, "type": "enum", "enum": "t.Kind"},
            "f32": {"number": 9, "type": "fixed32"},
            "sf32": {"number": 10, "type": "sfixed32"},
            "fl": {"number": 11, "type": "float"},
            "f64": {"number": 12, "type": "fixed64"},
            "sf64": {"number": 13, "type": "sfixed64"},
            "db": {"number": 14, "type": "double"},
            "s": {"number": 15, "type": "string"},
            "raw": {"number": 16, "type": "bytes"},
            "sub": {"number": 17, "type": "message", "message": "t.Test1"},
            "far": {"number": 536870911, "type": "int32"},
        }
    },
    "t.Test1": {"fields": {"a": {"number": 1, "type": "int32"}}},
    "t.Test2": {"fields": {"b": {"number": 2, "type": "string"}}},
    "t.Test3": {"fields": {"c": {"number": 3, "type": "message", "message": "t.Test1"}}},
    "t.Test5": {"fields": {"f": {"number": 6, "type": "int32", "repeated": True}}},
    "t.Reading": {
        "fields": {
            "id": {"number": 1, "type": "uint32"},
            "values": {"number": 2, "type": "double", "repeated": True},
            "tags": {"number": 3, "type": "string", "repeated": True},
            "where": {"number": 4, "type": "message", "message": "t.Place"},
            "kind": {"number": 5, "type": "enum", "enum": "t.Kind"},
            "raw": {"number": 6, "type": "bytes"},
            "old": {"number": 7, "type": "int32", "repeated": True, "packed": False},
            "places": {"number": 8, "type": "message", "message": "t.Place", "repeated": True},
            "kinds": {"number": 9, "type": "enum", "enum": "t.Kind", "repeated": True},
        }
    },
    "t.Place": {"fields": {"lat": {"number": 1, "type": "double"}, "name": {"number": 2, "type": "string"}}},
    "t.Deep": {"fields": {"d": {"number": 1, "type": "message", "message": "t.Deep"}}},
}
DEFS = {"messages": T, "enums": {"t.Kind": {"UNKNOWN": 0, "TEMP": 1, "NEG": -2}}}
MS = MessageSet(DEFS)


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


# (message, JSON object, wire bytes): encode gives the bytes, decode gives the object back.
VECTORS = (
    ("t.Test1", {"a": 150}, "08 96 01"),  # the guide's first example
    ("t.Test2", {"b": "testing"}, "12 07 74 65 73 74 69 6e 67"),
    ("t.Test3", {"c": {"a": 150}}, "1a 03 08 96 01"),
    ("t.Test3", {"c": {}}, "1a 00"),  # a present empty message is written
    ("t.Test5", {"f": [3, 270, 86942]}, "32 06 03 8e 02 9e a7 05"),  # packed by default
    ("t.Reading", {"old": [3, 270]}, "38 03 38 8e 02"),  # packed: false
    ("t.Reading", {"tags": ["", "x"]}, "1a 00 1a 01 78"),  # empty strings kept in a list
    ("t.Reading", {"values": [1.0, -2.5]}, "12 10 000000000000f03f 00000000000004c0"),
    ("t.Reading", {"kinds": ["TEMP", "NEG", 7]}, "4a 0c 01 feffffffffffffffff01 07"),
    ("t.Reading", {"places": [{}, {"name": "a"}]}, "42 00 42 03 12 01 61"),
    ("t.All", {"i32": -1}, "08 ffffffffffffffffff01"),  # negative int32: 10 bytes
    ("t.All", {"i32": -2}, "08 feffffffffffffffff01"),
    ("t.All", {"i32": 2147483647}, "08 ffffffff07"),
    ("t.All", {"i64": "-9223372036854775808"}, "10 80808080808080808001"),
    ("t.All", {"u32": 4294967295}, "18 ffffffff0f"),
    ("t.All", {"u64": "18446744073709551615"}, "20 ffffffffffffffffff01"),
    ("t.All", {"s32": -1}, "28 01"),  # zigzag
    ("t.All", {"s32": 1}, "28 02"),
    ("t.All", {"s32": -2}, "28 03"),
    ("t.All", {"s32": 2147483647}, "28 feffffff0f"),
    ("t.All", {"s32": -2147483648}, "28 ffffffff0f"),
    ("t.All", {"s64": "-9223372036854775808"}, "30 ffffffffffffffffff01"),
    ("t.All", {"b": True}, "38 01"),
    ("t.All", {"e": "TEMP"}, "40 01"),
    ("t.All", {"e": 5}, "40 05"),  # open enum: an unknown number stays a number
    ("t.All", {"f32": 4294967295}, "4d ffffffff"),
    ("t.All", {"sf32": -2}, "55 feffffff"),
    ("t.All", {"fl": 1.5}, "5d 0000c03f"),
    ("t.All", {"fl": "NaN"}, "5d 0000c07f"),
    ("t.All", {"fl": "-Infinity"}, "5d 000080ff"),
    ("t.All", {"f64": "1"}, "61 0100000000000000"),
    ("t.All", {"sf64": "-1"}, "69 ffffffffffffffff"),
    ("t.All", {"db": -0.0}, "71 0000000000000080"),  # -0.0 is not the default
    ("t.All", {"db": "Infinity"}, "71 000000000000f07f"),
    ("t.All", {"s": "caf\u00e9"}, "7a 05 636166c3a9"),
    ("t.All", {"raw": "AAH/"}, "8201 03 0001ff"),  # field 16: a two-byte tag
    ("t.All", {"sub": {"a": 1}}, "8a01 02 0801"),
    ("t.All", {"far": 1}, "f8ffffff0f 01"),  # the largest field number
    ("t.All", {"i32": 1, "u32": 2, "b": True}, "08 01 18 02 38 01"),  # field-number order
)


def test_vectors_encode():
    for name, obj, wire in VECTORS:
        assert MS.encode(name, obj) == h(wire), (name, obj, MS.encode(name, obj).hex())


def test_vectors_decode():
    for name, obj, wire in VECTORS:
        assert MS.decode(name, h(wire)) == obj, (name, wire, MS.decode(name, h(wire)))
        assert MS.decode(name, bytearray(h(wire))) == obj
        assert MS.decode(name, memoryview(b"\xff\xff" + h(wire) + b"\x07"), 2, 2 + len(h(wire))) == obj


def test_defaults_are_not_written_and_read_as_absent():
    zeros = {"i32": 0, "i64": "0", "u64": 0, "s32": 0, "b": False, "e": "UNKNOWN", "fl": 0.0, "db": 0}
    zeros.update({"f32": 0, "sf64": "0", "s": "", "raw": "", "sub": None, "far": None})
    assert MS.encode("t.All", zeros) == b""
    # written explicitly (another encoder may), a default reads as absent, as MessageToDict has it
    assert MS.decode("t.All", h("08 00 10 00 3800 40 00 4d 00000000 5d 00000000 7a 00 8201 00")) == {}
    assert MS.decode("t.All", h("08 01 08 00")) == {}  # the last occurrence wins
    assert MS.decode("t.All", h("08 8080808010")) == {}  # int32 keeps only the low 32 bits


# (type, lowest, highest, their JSON forms as decoded)
BOUNDS = (
    ("i32", -(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
    ("i64", -(2**63), 2**63 - 1, str(-(2**63)), str(2**63 - 1)),
    ("u32", 0, 2**32 - 1, None, 2**32 - 1),
    ("u64", 0, 2**64 - 1, None, str(2**64 - 1)),
    ("s32", -(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
    ("s64", -(2**63), 2**63 - 1, str(-(2**63)), str(2**63 - 1)),
    ("f32", 0, 2**32 - 1, None, 2**32 - 1),
    ("sf32", -(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
    ("f64", 0, 2**64 - 1, None, str(2**64 - 1)),
    ("sf64", -(2**63), 2**63 - 1, str(-(2**63)), str(2**63 - 1)),
    ("e", -(2**31), 2**31 - 1, -(2**31), 2**31 - 1),
)


def test_integer_bounds():
    for key, lo, hi, jlo, jhi in BOUNDS:
        for v, want in ((lo, jlo), (hi, jhi), (str(hi) if key != "e" else hi, jhi), (float(2**20), None)):
            got = MS.decode("t.All", MS.encode("t.All", {key: v}))
            assert got == ({key: want} if want is not None else got), (key, v, got)
        for bad in (lo - 1, hi + 1, str(hi + 1), 1.5, "1.0", " 1", "", "-", "0x10", True, [1], {}):
            e = raises(ProtoError, MS.encode, "t.All", {key: bad})
            assert e.path == "t.All." + key, (key, bad, e.path)


def test_floats():
    cases = ((0.1, 0.1), (2357719.25, 2357719.2), (-2357719.25, -2357719.2), (3.4028234663852886e38, 3.4028235e38))
    for v, want in cases:  # float: the shortest decimal of the float32, ties to even (json_format)
        assert MS.decode("t.All", MS.encode("t.All", {"fl": v})) == {"fl": want}, v
    for v in (5e-324, 1.7976931348623157e308, -0.0, 0.1):  # double: exact
        assert repr(MS.decode("t.All", MS.encode("t.All", {"db": v}))["db"]) == repr(v)
    for s in ("NaN", "Infinity", "-Infinity"):
        assert MS.decode("t.All", MS.encode("t.All", {"fl": s, "db": s})) == {"fl": s, "db": s}
    for bad in (3.5e38, -3.5e38, "nan", "1.5", True, 2**1024):
        assert raises(ProtoError, MS.encode, "t.All", {"fl": bad}).path == "t.All.fl"


def test_base64_spellings():
    for text in ("+/8=", "+/8", "-_8", "-_8="):
        assert MS.decode("t.All", MS.encode("t.All", {"raw": text})) == {"raw": "+/8="}
    for bad in ("A", "AAA*", "A=A=", "AA===", 5):
        assert raises(ProtoError, MS.encode, "t.All", {"raw": bad}).path == "t.All.raw"


def test_unknown_fields_are_skipped():
    unknown = "b006 05 b106 0102030405060708 b206 03 616263 b506 01020304"  # fields 102..: wire 0, 1, 2, 5
    assert MS.decode("t.Test1", h(unknown + " 08 96 01 " + unknown)) == {"a": 150}
    assert MS.decode("t.Test1", h("08 96 01 12 03 616263")) == {"a": 150}  # another message's field
    assert MS.decode("t.Test1", h("0a 01 61 08 07")) == {"a": 7}  # wrong wire type: skipped, as protobuf does


def test_repeated_either_packing_and_merging():
    assert MS.decode("t.Test5", h("30 03 32 02 8e02 30 04")) == {"f": [3, 270, 4]}
    assert MS.decode("t.Reading", h("3a 02 0102")) == {"old": [1, 2]}  # packed where unpacked is declared
    assert MS.decode("t.Test5", h("32 00")) == {}  # an empty packed list is no list
    assert MS.decode("t.Reading", h("22 03 12 01 61 22 00")) == {"where": {"name": "a"}}  # merged
    assert MS.decode("t.Reading", h("22 03 12 01 61 22 09 09 000000000000f03f")) == {"where": {"name": "a", "lat": 1.0}}


# (message, wire bytes, what the error message says)
MALFORMED = (
    ("t.Test1", "08", "cut short"),
    ("t.Test1", "08 96", "cut short"),
    ("t.Test1", "88", "cut short"),  # the tag itself
    ("t.Test1", "08 ffffffffffffffffffff01", "over 10 bytes"),
    ("t.Test2", "12 07 7465", "past the end"),
    ("t.Test2", "12 ffffffffffffffffff01 00", "past the end"),  # a negative length
    ("t.Test2", "12 ffffffff0f 00", "past the end"),
    ("t.Test1", "0d 0102", "past the end"),  # fixed32 cut short
    ("t.Test1", "09 01020304050607", "past the end"),
    ("t.Test1", "0e 00", "wire type 6"),
    ("t.Test1", "0f 00", "wire type 7"),
    ("t.Test1", "0b 08 01 0c", "wire type 3"),  # groups are refused, known field or not
    ("t.Test1", "13 08 01 14", "wire type 3"),
    ("t.Test1", "0c", "wire type 4"),
    ("t.Test1", "00 01", "field 0"),
    ("t.Test1", "f8ffffff1f 01", "field 1073741823"),
    ("t.Test2", "12 02 fffe", "invalid UTF-8"),
    ("t.Test2", "12 02 c3", "past the end"),
    ("t.Reading", "12 07 00000000000000", "multiple of 8"),
    ("t.Reading", "4a 02 01 ff", "cut short"),  # a packed varint cut at the list's end
    ("t.Reading", "22 03 0a 05 61", "past the end"),  # inside a nested message
)


def test_malformed_input_raises_proto_error():
    for name, wire, says in MALFORMED:
        e = raises(ProtoError, MS.decode, name, h(wire))
        assert says in str(e), (wire, str(e))
        assert e.path.startswith(name), e.path


def test_error_paths():
    assert raises(ProtoError, MS.decode, "t.Reading", h("12 07 00000000000000")).path == "t.Reading.values[0]"
    e = raises(ProtoError, MS.decode, "t.Reading", h("1a 01 61 1a 01 ff"))
    assert e.path == "t.Reading.tags[1]" and e.message == "invalid UTF-8"
    assert (
        str(raises(ProtoError, MS.decode, "t.Reading", h("22 04 12 02 fffe"))) == "t.Reading.where.name: invalid UTF-8"
    )
    e = raises(ProtoError, MS.encode, "t.Reading", {"values": [1, 2, 3, "x"]})
    assert e.path == "t.Reading.values[3]" and "double" in e.message
    e = raises(ProtoError, MS.encode, "t.Reading", {"places": [{}, {"lat": "north"}]})
    assert e.path == "t.Reading.places[1].lat"
    e = raises(ProtoError, MS.encode, "t.Reading", {"id": 1, "nope": 2})
    assert e.path == "t.Reading" and "nope" in e.message
    assert MS.encode("t.Reading", {"id": 1, "nope": 2}, ignore_unknown=True) == h("08 01")
    assert raises(ProtoError, MS.encode, "t.Reading", {"where": {"x": 1}}).path == "t.Reading.where"
    for bad in ([1], "x", 5, None):
        assert raises(ProtoError, MS.encode, "t.Reading", bad).path == "t.Reading"
    assert raises(ProtoError, MS.encode, "t.Reading", {"tags": "x"}).path == "t.Reading.tags"
    assert raises(ProtoError, MS.encode, "t.Reading", {"tags": [None]}).path == "t.Reading.tags[0]"
    assert raises(ProtoError, MS.encode, "t.Reading", {"kind": "COLD"}).path == "t.Reading.kind"
    assert raises(ProtoError, MS.encode, "t.Nope", {}).path == "t.Nope"
    assert raises(ProtoError, MS.decode, "t.Nope", b"").path == "t.Nope"
    assert raises(ProtoError, MS.decode, "t.Test1", b"\x08\x01", 1, 5).path == "t.Test1"
    assert raises(ProtoError, MS.decode, "t.Test1", "\x08\x01").path == "t.Test1"


def test_nesting_depth_is_capped():
    def deep(n):
        return {"d": deep(n - 1)} if n else {}

    data = MS.encode("t.Deep", deep(31))
    assert MS.decode("t.Deep", data) == deep(31)
    assert "deeper" in raises(ProtoError, MS.encode, "t.Deep", deep(32)).message
    wire = b""
    for _ in range(40):
        wire = b"\x0a" + bytes([len(wire)]) + wire if len(wire) < 128 else wire
    e = raises(ProtoError, MS.decode, "t.Deep", wire)
    assert "deeper" in e.message and e.path.startswith("t.Deep.d.d.d")


def test_prefixes_and_byte_flips_raise_only_proto_error():
    obj = {"id": 7, "values": [1.5, -2.0], "tags": ["a", "caf\u00e9"], "where": {"lat": 2.5, "name": "x"}}
    obj.update(kind="NEG", raw="AAEC", old=[-1, 300], places=[{"name": "p"}], kinds=["TEMP", 2])
    data = MS.encode("t.Reading", obj)
    assert MS.decode("t.Reading", data) == obj
    for n in range(len(data)):  # every prefix, and every byte set to a few values
        try:
            MS.decode("t.Reading", data[:n])
        except ProtoError:
            pass
        for b in (0x00, 0x07, 0x80, 0xFF):
            try:
                MS.decode("t.Reading", data[:n] + bytes([b]) + data[n + 1 :])
            except ProtoError:
                pass


def test_encode_into_every_buffer_size():
    obj = {"id": 150, "values": [1.5] * 20, "tags": ["x" * 130], "where": {"name": "y" * 200}, "raw": "AAEC" * 50}
    data = MS.encode("t.Reading", obj)
    assert len(data) > 300
    buf = bytearray(len(data) + 4)
    assert MS.encode_into("t.Reading", obj, buf, 4) == len(buf) and bytes(buf[4:]) == data
    for size in range(len(data)):
        e = raises(ProtoError, MS.encode_into, "t.Reading", obj, bytearray(size + 2), 2)
        assert "does not fit" in e.message and e.path.startswith("t.Reading"), (size, str(e))
    small = MessageSet(DEFS)
    small.max_size = 300
    assert "max_size" in raises(ProtoError, small.encode, "t.Reading", obj).message
    small.max_size = 1024
    assert small.encode("t.Reading", obj) == data


# (definitions, the path the error names)
BAD_DEFS = (
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 0, "type": "int32"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 536870912, "type": "int32"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 19000, "type": "int32"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": "1", "type": "int32"}}}}}, "m.M.x"),
    (
        {"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int32"}, "y": {"number": 1, "type": "bool"}}}}},
        "m.M.y",
    ),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "message", "message": "m.N"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "message"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "enum", "enum": "m.E"}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int32", "enum": "m.E"}}}}}, "m.M.x"),
    (
        {
            "messages": {
                "m.M": {
                    "fields": {
                        "x": {"number": 1, "type": "message", "message": "m.M", "repeated": True, "packed": True}
                    }
                }
            }
        },
        "m.M.x",
    ),
    (
        {"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "string", "repeated": True, "packed": True}}}}},
        "m.M.x",
    ),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int32", "packed": True}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int32", "repeated": 1}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": {"number": 1, "type": "int32", "repeat": True}}}}}, "m.M.x"),
    ({"messages": {"m.M": {"fields": {"x": 5}}}}, "m.M.x"),
    ({"messages": {"m.M": {"field": {}}}}, "m.M"),
    ({"messages": {"m.M": []}}, "m.M"),
    ({"messages": {}, "enums": {"m.E": {"A": 1}}}, "m.E"),
    ({"messages": {}, "enums": {"m.E": {"A": 0, "B": 0}}}, "m.E.A m.E.B"),  # dict order differs on MicroPython
    ({"messages": {}, "enums": {"m.E": {"A": 0, "B": 2**31}}}, "m.E.B"),
    ({"messages": {}, "enums": {"m.E": [0]}}, "m.E"),
    ({"messages": []}, ""),
    ({"messages": {}, "extra": 1}, ""),
    ([], ""),
)


def test_bad_definitions_name_the_field():
    for defs, path in BAD_DEFS:
        e = raises(ProtoError, MessageSet, defs)
        assert e.path in path.split(" ") if path else e.path == "", (defs, e.path, e.message)


def test_names_and_has():
    assert MS.has("t.Reading") and not MS.has("t.Nope") and not MS.has("Reading")
    assert MS.names() == sorted(T)
    empty = MessageSet({"messages": {"e.Empty": {}}})
    assert empty.encode("e.Empty", {}) == b"" and empty.decode("e.Empty", h("08 01")) == {}


def test_encode_into_allocates_nothing_for_numbers():
    requires_micropython()
    import micropython  # type: ignore

    obj = {"i32": -5, "i64": 1 << 40, "u32": 7, "s32": -3, "b": True, "e": "NEG", "f32": 9, "sf32": -9, "fl": 0.25}
    obj.update(db=21.5, f64=3, sub={"a": 150}, far=1)
    reading = {"values": [1.5, 2.5], "kinds": [1, "TEMP", -2], "where": {"lat": 1.0}, "places": [{}] * 3}
    buf = bytearray(200)
    n = MS.encode_into("t.All", obj, buf)
    m = MS.encode_into("t.Reading", reading, buf)
    micropython.heap_lock()
    try:
        assert MS.encode_into("t.All", obj, buf) == n
        assert MS.encode_into("t.Reading", reading, buf) == m
    finally:
        micropython.heap_unlock()


def test_allocation_per_call():
    requires_micropython()
    import gc

    from apigw.compat import mem_total

    obj = {"id": 150, "values": [1.5, 2.5, 3.5], "tags": ["sensor-7"], "where": {"lat": 48.1}, "kind": "TEMP"}
    buf = bytearray(128)
    n = MS.encode_into("t.Reading", obj, buf)
    data = bytes(buf[:n])
    MS.decode("t.Reading", data)
    gc.collect()
    t = mem_total()
    MS.encode_into("t.Reading", obj, buf)
    assert mem_total() - t <= 32  # the view of the one str
    t = mem_total()
    got = MS.decode("t.Reading", data)
    assert got == obj and mem_total() - t < 1200, mem_total() - t
