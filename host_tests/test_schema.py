"""Portable tests for firmware/apigw/schema.py: tables of (schema, instance, expected) where
expected is None (valid) or (pointer, keyword), tables of patterns and of schemas that must not
compile, the depth cap, errors() messages, and (MicroPython) allocation and speed.

The same expectations hold on both runtimes, which is what makes the pattern subset portable.
MicroPython's dict keeps no insertion order, so a row never has two failing object members.
"""

from apigw import schema
from apigw.schema import SchemaError, compile_schema
from check import raises, requires_micropython

ANY = object()  # an instance no JSON parser makes

SENSOR = {
    "type": "object",
    "required": ["id", "temp"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "temp": {"type": "number", "minimum": -40, "maximum": 50},
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "mode": {"enum": ["auto", "off"]},
    },
}
ROWS = {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}

CASES = (
    # type
    ({"type": "null"}, None, None),
    ({"type": "null"}, 0, ("", "type")),
    ({"type": "boolean"}, False, None),
    ({"type": "boolean"}, 0, ("", "type")),
    ({"type": "integer"}, 3, None),
    ({"type": "integer"}, -(2**70), None),
    ({"type": "integer"}, 1.0, None),
    ({"type": "integer"}, -0.0, None),
    ({"type": "integer"}, 1.5, ("", "type")),
    ({"type": "integer"}, float("inf"), ("", "type")),
    ({"type": "integer"}, True, ("", "type")),
    ({"type": "integer"}, "1", ("", "type")),
    ({"type": "number"}, 1, None),
    ({"type": "number"}, 2.5, None),
    ({"type": "number"}, False, ("", "type")),
    ({"type": "string"}, "", None),
    ({"type": "string"}, b"x", ("", "type")),
    ({"type": "array"}, [], None),
    ({"type": "array"}, (), ("", "type")),
    ({"type": "array"}, {}, ("", "type")),
    ({"type": "object"}, {}, None),
    ({"type": "object"}, [], ("", "type")),
    ({"type": ["string", "null"]}, None, None),
    ({"type": ["string", "null"]}, 1, ("", "type")),
    ({"type": ["integer", "boolean"]}, True, None),
    # enum / const: JSON equality
    ({"enum": [1, "a", None]}, 1.0, None),
    ({"enum": [1, "a", None]}, "a", None),
    ({"enum": [1, "a", None]}, None, None),
    ({"enum": [1, "a", None]}, True, ("", "enum")),
    ({"enum": [1, "a", None]}, "b", ("", "enum")),
    ({"enum": [True]}, 1, ("", "enum")),
    ({"enum": [False]}, 0, ("", "enum")),
    ({"enum": [0]}, False, ("", "enum")),
    ({"enum": [[1, True]]}, [1.0, True], None),
    ({"enum": [[1, True]]}, [1, 1], ("", "enum")),
    ({"enum": [[1, True]]}, [1], ("", "enum")),
    ({"enum": [{"a": [0]}]}, {"a": [0.0]}, None),
    ({"enum": [{"a": [0]}]}, {"a": [False]}, ("", "enum")),
    ({"enum": [{"a": [0]}]}, {"a": [0], "b": 1}, ("", "enum")),
    ({"enum": []}, None, ("", "enum")),
    ({"enum": ["a"]}, ANY, ("", "type")),
    ({"enum": [1]}, (1,), ("", "type")),
    ({"const": None}, None, None),
    ({"const": None}, 0, ("", "const")),
    ({"const": False}, 0, ("", "const")),
    ({"const": 2}, 2.0, None),
    ({"const": {"k": "v"}}, {"k": "v"}, None),
    ({"const": {"k": "v"}}, {"k": "w"}, ("", "const")),
    ({"const": 1, "enum": [1, 2]}, 2, ("", "const")),
    # numbers; limits leave other types alone
    ({"minimum": 3}, 3, None),
    ({"minimum": 3}, 2.999, ("", "minimum")),
    ({"minimum": 3}, "2", None),
    ({"maximum": 2.5}, 2.5, None),
    ({"maximum": 2.5}, 3, ("", "maximum")),
    ({"exclusiveMinimum": 0}, 0, ("", "exclusiveMinimum")),
    ({"exclusiveMinimum": 0}, 0.001, None),
    ({"exclusiveMaximum": 10}, 10.0, ("", "exclusiveMaximum")),
    ({"exclusiveMaximum": 10}, 9, None),
    ({"maximum": 2**64}, 2**64 + 1, ("", "maximum")),
    ({"minimum": 1, "maximum": 0}, 1, ("", "maximum")),
    ({"minimum": 0}, True, None),
    # strings: code points
    ({"minLength": 2}, "ab", None),
    ({"minLength": 2}, "a", ("", "minLength")),
    ({"maxLength": 3}, "\u00e9\u2603\U0001f600", None),
    ({"maxLength": 2}, "\u00e9\u2603\U0001f600", ("", "maxLength")),
    ({"minLength": 3}, "\u00e9\u00e9", ("", "minLength")),
    ({"maxLength": 0}, [1], None),
    # pattern: unanchored search
    ({"pattern": "b", "maxLength": 9}, "abc", None),
    ({"pattern": "^b"}, "abc", ("", "pattern")),
    ({"pattern": "^[a-z]+$", "maxLength": 9}, "abc\n", ("", "pattern")),
    ({"pattern": "^a.c$", "maxLength": 9}, "a\nc", ("", "pattern")),
    ({"pattern": "^a.c$", "maxLength": 9}, "a\u00e9c", None),
    ({"pattern": "^[0-9]+$", "maxLength": 9}, 12, None),
    # arrays
    ({"minItems": 1}, [], ("", "minItems")),
    ({"maxItems": 1}, [1, 2], ("", "maxItems")),
    ({"maxItems": 1}, "ab", None),
    ({"items": {"type": "integer"}}, [1, 2.0, 3], None),
    ({"items": {"type": "integer"}}, [1, "x", 2, "y"], ("/1", "type")),
    ({"items": {"type": "integer"}, "maxItems": 2}, [1, "x", 3], ("", "maxItems")),
    ({"items": False}, [], None),
    ({"items": False}, [0], ("/0", "false")),
    ({"items": {"items": {"minimum": 0}}}, [[0], [1, -1]], ("/1/1", "minimum")),
    (ROWS, [{}, {"name": "a"}, {"name": "b"}, {"name": 3}], ("/3/name", "type")),
    # objects
    (SENSOR, {"id": 1, "temp": 20.5}, None),
    (SENSOR, {"id": 1, "temp": 20.5, "name": "k", "mode": "off"}, None),
    (SENSOR, {"id": 1}, ("", "required")),
    (SENSOR, {"id": 0, "temp": 1}, ("/id", "minimum")),
    (SENSOR, {"id": 1, "temp": 51}, ("/temp", "maximum")),
    (SENSOR, {"id": 1, "temp": 0, "name": ""}, ("/name", "minLength")),
    (SENSOR, {"id": 1, "temp": 0, "mode": "on"}, ("/mode", "enum")),
    (SENSOR, {"id": 1, "temp": 0, "x": 1}, ("", "additionalProperties")),
    (SENSOR, {"id": 1.5, "x": 1}, ("", "required")),
    (SENSOR, {"id": 1.5, "temp": 0, "x": 1}, ("", "additionalProperties")),
    (SENSOR, [], ("", "type")),
    ({"required": ["a"], "properties": {"b": {"type": "string"}}}, {"b": 1}, ("", "required")),
    ({"required": ["a"]}, [], None),
    ({"properties": {"a/b": {"type": "string"}}}, {"a/b": 1}, ("/a~1b", "type")),
    ({"properties": {"m~n": False}}, {"m~n": 1}, ("/m~0n", "false")),
    ({"properties": {"~/": {"items": False}}}, {"~/": [1]}, ("/~0~1/0", "false")),
    ({"properties": {"": {"type": "null"}}}, {"": 0}, ("/", "type")),
    ({"additionalProperties": False}, {}, None),
    ({"additionalProperties": False}, {"a": 1}, ("", "additionalProperties")),
    ({"additionalProperties": {"type": "integer"}, "properties": {"s": {}}}, {"s": "x", "n": 1}, None),
    ({"additionalProperties": {"type": "integer"}, "properties": {"s": {}}}, {"s": "x", "n": "1"}, ("/n", "type")),
    ({"properties": {"a": True}, "additionalProperties": False}, {"a": ANY}, None),
    # boolean and empty schemas
    (True, ANY, None),
    ({}, ANY, None),
    ({"title": "t", "description": "d", "default": 1, "examples": [2], "$comment": "c"}, ANY, None),
    (False, None, ("", "false")),
    ({"minimum": 0}, ANY, ("", "type")),
    ({"properties": {"a": {"minimum": 0}}}, {"a": ANY}, ("/a", "type")),
    ({"type": "object"}, {1: 2}, None),
    ({"additionalProperties": False}, {1: 2}, ("", "additionalProperties")),
    ({"additionalProperties": {"type": "string"}}, {7: 2}, ("/7", "type")),
)

# (pattern, maxLength, string, matches): the same answers on MicroPython and CPython.
PATTERNS = (
    ("abc", None, "xabcx", True),
    ("^abc", None, "xabc", False),
    ("abc$", None, "abc\n", False),
    ("^$", None, "", True),
    ("a|b|c", None, "xxc", True),
    ("^(ab|cd)+$", 40, "abcdab", True),
    ("^(?:ab|cd)+$", 40, "abcda", False),
    ("^a+?b", 40, "aab", True),
    ("^a*?$", 40, "aaa", True),
    ("^ab??c", 40, "ac", True),
    ("^[a-c]+$", 40, "abcabc", True),
    ("^[a-c]+$", 40, "abcd", False),
    ("^[^a-c]+$", 40, "xyz", True),
    ("^[^a-c]+$", 40, "xaz", False),
    ("^[^a]$", 40, "\u00e9", True),
    ("^[^a][^a]$", 40, "\u00e9", False),
    ("^.$", 40, "\u2603", True),
    ("^..$", 40, "\u2603", False),
    ("^.+$", 40, "\u00e9\u2603\U0001f600", True),
    ("^.{", 40, "", SchemaError),
    ("^a.+b$", 40, "a\u00e9\u00e9b", True),
    ("^a.b$", 40, "a\u00e9\u00e9b", False),
    ("x.y", 40, "x\ny", False),
    ("x.y", 40, "x\ry", True),
    ("^\\d+$", 40, "123", True),
    ("^\\d+$", 40, "12\u0663", False),
    ("^\\w+$", 40, "a_1", True),
    ("^\\w+$", 40, "h\u00e9", False),
    ("^\\W$", 40, "\u00e9", True),
    ("^\\S+$", 40, "h\u00e9llo", True),
    ("^\\D+$", 40, "\u00e9\u00e9", True),
    ("\\s", 40, "a\tb", True),
    ("\\s", 40, "a\u00a0b", False),
    ("^[\\d.]+$", 40, "1.5", True),
    ("^[\\w-]+$", 40, "a-b_c", True),
    ("^[\\s\\S]+$", 40, "\u00e9\n", True),
    ("^[a\\-z]+$", 40, "-", True),
    ("^[a\\-z]+$", 40, "b", False),
    ("^[-a]$", 40, "-", True),
    ("^[a-]$", 40, "-", True),
    ("^[a-c-e]+$", 40, "-e", True),
    ("^[+--]$", 40, ",", True),
    ("^[\\]\\[]+$", 40, "][", True),
    ("^[\\d-z]+$", 40, "1-z", True),
    ("^[\\d-z]+$", 40, "y", False),
    ("^[\\^]$", 40, "^", True),
    ("^\\.\\*\\+\\?\\(\\)\\{\\}\\|\\$\\^\\/\\\\$", None, ".*+?(){}|$^/\\", True),
    ("^\\n\\t\\r\\f\\v$", None, "\n\t\r\f\v", True),
    ("^[\\n]$", None, "\n", True),
    ("^a b#c&d~e,f-g:h=i!j<k>l%m@n`o'p\"q;r$", None, "a b#c&d~e,f-g:h=i!j<k>l%m@n`o'p\"q;r", True),
    ("^[&~|]+$", 40, "&~|", True),
    ("a\tb", None, "a\tb", True),
    ("(^a|b$)", None, "ab", True),
    ("(^a|b$)", None, "ba", False),
    ("", None, "x", True),
    ("()", None, "", True),
    ("^[a-z]+(\\.[a-z]+)*$", 40, "a.bc.d", True),
    ("^[a-z]+(\\.[a-z]+)*$", 40, "a..b", False),
    ("^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]+$", 40, "x.y@ex-1.org", True),
)

BAD_PATTERNS = (
    "a{2}",
    "a{2,3}",
    "a}",
    "]",
    "(?=a)",
    "(?!a)b",
    "(?<=a)b",
    "(?P<n>a)",
    "(?i)a",
    "\\bfoo",
    "\\Bfoo",
    "(a)\\1",
    "\\x41",
    "\\u0041",
    "\\0",
    "\\A",
    "\\Z",
    "\\q",
    "\\",
    "[]a]",
    "[^]a]",
    "[[]",
    "[a",
    "[z-a]",
    "(a",
    "a)",
    "*a",
    "|*",
    "(*a)",
    "^*",
    "$+",
    "a**",
    "a*??",
    "(a*)*",
    "(a|)+",
    "(a?)?",
    "(|b)*",
    "((a)*)+",
    "()*",
    "\u00e9",
    "[\u00e9]",
    "a\x00",
    "a\x7f",
)

# (schema, path of the error, text in its message)
BAD_SCHEMAS = (
    ({"oneOf": []}, "", "unsupported keyword 'oneOf'"),
    ({"properties": {"x": {"oneOf": []}}}, "/properties/x", "unsupported keyword 'oneOf'"),
    ({"properties": {"a/b": {"items": {"$ref": "#"}}}}, "/properties/a~1b/items", "'$ref'"),
    ({"prefixItems": []}, "", "'prefixItems'"),
    ({"$defs": {}}, "", "'$defs'"),
    ({"format": "email"}, "", "'format'"),
    ({"properties": {"a": {"maximum": "5"}}}, "/properties/a/maximum", "number"),
    ({"minimum": True}, "/minimum", "number"),
    ({"minimum": None}, "/minimum", "number"),
    ({"minimum": float("nan")}, "/minimum", "number"),
    ({"exclusiveMaximum": True}, "/exclusiveMaximum", "number"),
    ({"minLength": -1}, "/minLength", "non-negative"),
    ({"maxLength": 1.5}, "/maxLength", "non-negative"),
    ({"maxItems": "2"}, "/maxItems", "non-negative"),
    ({"minItems": False}, "/minItems", "non-negative"),
    ({"required": "a"}, "/required", "list"),
    ({"required": ["a", 1]}, "/required", "list"),
    ({"required": ["a", "a"]}, "/required", "unique"),
    ({"type": "int"}, "/type", "unknown type"),
    ({"type": []}, "/type", "type"),
    ({"type": ["string", "string"]}, "/type", "repeats"),
    ({"type": [["string"]]}, "/type", "unknown type"),
    ({"items": [{"type": "string"}]}, "/items", "list form"),
    ({"items": {"items": 3}}, "/items/items", "object or a boolean"),
    ({"additionalProperties": "no"}, "/additionalProperties", "object or a boolean"),
    ({"properties": []}, "/properties", "object"),
    ({"enum": "a"}, "/enum", "list"),
    ({"enum": [b"x"]}, "/enum", "JSON"),
    ({"const": float("inf")}, "/const", "JSON"),
    ({"const": {1: 2}}, "/const", "keys"),
    ({"pattern": 5}, "/pattern", "string"),
    ({"pattern": "^[a-z]+$"}, "/pattern", "maxLength"),
    ({"pattern": "^[a-z]+$", "maxLength": 254}, "/pattern", "1 repeats need maxLength <= 253"),
    ({"pattern": "^(a|b)+$", "maxLength": 200}, "/pattern", "2 repeats need maxLength <= 126"),
    ([], "", "object or a boolean"),
    (None, "", "object or a boolean"),
)


def _deep(n, leaf):
    for _ in range(n):
        leaf = {"items": leaf}
    return leaf


def _nest(n, leaf):
    for _ in range(n):
        leaf = [leaf]
    return leaf


def test_cases():
    for doc, value, want in CASES:
        s = compile_schema(doc)
        got = s.validate(value)
        assert got == want, (doc, value, got, want)
        assert (s.errors(value) is None) == (want is None), (doc, value)


def test_compiled_once_reused():
    s = compile_schema(SENSOR)
    for doc, value, want in CASES:
        if doc is SENSOR:
            assert s.validate(value) == want, (value, want)


def test_patterns():
    for pattern, maxlen, text, want in PATTERNS:
        doc = {"pattern": pattern} if maxlen is None else {"pattern": pattern, "maxLength": maxlen}
        if want is SchemaError:
            assert raises(SchemaError, compile_schema, doc).path == "/pattern", pattern
            continue
        got = compile_schema(doc).validate(text)
        assert got == (None if want else ("", "pattern")), (pattern, text, got)


def test_bad_patterns():
    for pattern in BAD_PATTERNS:
        e = raises(SchemaError, compile_schema, {"properties": {"p": {"pattern": pattern, "maxLength": 8}}})
        assert e.path == "/properties/p/pattern", (pattern, e.path)
        assert str(e).startswith("/properties/p/pattern: "), str(e)


def test_bad_schemas():
    for doc, path, text in BAD_SCHEMAS:
        e = raises(SchemaError, compile_schema, doc)
        assert isinstance(e, ValueError)
        assert e.path == path, (doc, e.path, path)
        assert text in e.message, (doc, e.message, text)
        assert str(e) == (path or "(root)") + ": " + e.message


def test_supported_and_annotations_compile():
    doc = {k: 1 for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")}
    doc.update({"minLength": 0, "maxLength": 4, "pattern": "a", "minItems": 0, "maxItems": 3})
    doc.update({"type": "string", "properties": {}, "required": [], "additionalProperties": True, "items": {}})
    doc.update({"enum": ["a"], "const": "a"})
    assert sorted(k for k in doc) == sorted(schema.SUPPORTED)
    for k in schema.ANNOTATIONS:
        doc[k] = {"anything": [1, None]}
    s = compile_schema(doc)
    assert s.validate("a") is None
    assert s.validate("b") == ("", "enum")
    assert compile_schema({"maxLength": 4.0}).validate("abcde") == ("", "maxLength")


def test_depth_cap():
    depth = schema.MAX_DEPTH
    s = compile_schema(_deep(depth + 8, {"type": "integer"}))
    assert s.validate(_nest(depth, 1)) is None
    got = s.validate(_nest(depth + 9, 1))
    assert got == ("/0" * (depth + 1), "depth"), got
    obj = {"type": "object", "additionalProperties": {"$ref": "#"}}
    assert raises(SchemaError, compile_schema, obj).message == "unsupported keyword '$ref'"
    obj = {"type": "integer"}
    for _ in range(depth + 4):
        obj = {"properties": {"a": obj}}
    value = 1
    for _ in range(depth + 4):
        value = {"a": value}
    assert compile_schema(obj).validate(value) == ("/a" * (depth + 1), "depth")
    e = raises(SchemaError, compile_schema, _deep(2 * depth + 1, {}))
    assert e.path == "/items" * (2 * depth + 1) and "deeper" in e.message, e.path
    assert raises(SchemaError, compile_schema, {"const": _nest(2 * depth + 1, 0)}).path == "/const"
    # a deep value under a shallow schema is not walked
    assert compile_schema({"type": "array"}).validate(_nest(500, 1)) is None


def test_errors_messages():
    s = compile_schema(SENSOR)
    assert s.errors({"id": 1, "temp": 20}) is None
    assert s.errors({"id": 1, "temp": 60}) == "/temp: maximum 50"
    assert s.errors({"id": 1}) == "(root): required temp"
    assert s.errors([]) == "(root): type object"
    assert s.errors({"id": 1, "temp": 0, "zz": 0}) == "(root): additionalProperties zz"
    assert s.errors({"id": 1, "temp": 0, "mode": "x"}) == "/mode: enum"
    assert s.errors({"id": 1, "temp": 0, "name": "123456789"}) == "/name: maxLength 8"
    p = compile_schema({"pattern": "^[a-z]+$", "maxLength": 9})
    assert p.errors("A") == "(root): pattern ^[a-z]+$"
    assert compile_schema(False).errors(1) == "(root): false"
    assert compile_schema({"type": ["string", "null"]}).errors(1) == "(root): type string|null"
    long = compile_schema({"additionalProperties": False}).errors({"k" * 300: 1})
    assert len(long) == 120 and long.endswith("..."), long


def test_validate_never_raises():
    s = compile_schema({"type": "object", "properties": {"a": {"minimum": 0, "maxLength": 2, "enum": [1, "a"]}}})
    for v in (b"", bytearray(1), (1,), {1}, object(), float("nan"), float("inf"), 2**200, {"a": float("nan")}):
        s.validate(v)
        s.validate({"a": v})
        s.errors({"a": v})
    assert compile_schema({"maximum": 1}).validate(float("nan")) is None  # NaN compares false


def test_long_pattern_input_on_the_budget():
    pattern = "^[a-z]+(-[a-z]+)*$"  # three repeats inside loops
    n = (schema.PATTERN_FRAMES - 2) // 3 - 1
    e = raises(SchemaError, compile_schema, {"pattern": pattern, "maxLength": n + 1})
    assert e.message == "3 repeats need maxLength <= %d" % n, e.message
    s = compile_schema(_deep(30, {"pattern": pattern, "maxLength": n}))
    text = "ab-" * (n // 3) + "a" * (n - 3 * (n // 3))
    assert len(text) == n
    assert s.validate(_nest(30, text)) is None
    assert s.validate(_nest(30, text[:-1] + "_")) == ("/0" * 30, "pattern")
    wide = compile_schema({"pattern": "^.+$", "maxLength": schema.PATTERN_FRAMES - 3})
    assert wide.validate("\u00e9" * (schema.PATTERN_FRAMES - 3)) is None
    # alternatives outside a loop cost one frame each, whatever the length
    assert compile_schema({"pattern": "^(a|b|c)(x|y)?$"}).validate("cy") is None


def _sensor_doc():
    props = {
        "id": {"type": "integer", "minimum": 0},
        "name": {"type": "string", "minLength": 1, "maxLength": 32},
        "temp": {"type": "number", "minimum": -40, "maximum": 85},
        "hum": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
        "on": {"type": "boolean"},
        "mode": {"enum": ["auto", "heat", "cool", "off"]},
        "count": {"type": "integer", "maximum": 1000},
        "tags": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 16}},
        "ratio": {"type": "number"},
        "note": {"type": ["string", "null"], "maxLength": 64},
    }
    doc = {"type": "object", "required": sorted(props), "additionalProperties": False, "properties": props}
    value = {"id": 7, "name": "kitchen", "temp": 21.5, "hum": 40.0, "on": True, "mode": "auto", "count": 12}
    value.update({"tags": ["a", "b"], "ratio": 0.5, "note": None})
    return doc, value


def test_valid_object_allocates_nothing():
    requires_micropython()
    import gc

    from apigw.compat import mem_total, micropython

    doc, value = _sensor_doc()
    s = compile_schema(doc)
    assert s.validate(value) is None
    out = [None]
    gc.collect()
    before = mem_total()
    micropython.heap_lock()  # catches allocations the code asks for...
    try:
        out[0] = s.validate(value)
    finally:
        micropython.heap_unlock()
    # ...and mem_total catches bytecode frames, which heap_lock() silently moves to the C stack
    assert mem_total() == before, mem_total() - before
    assert out[0] is None


def test_speed_ten_fields():
    requires_micropython()
    import time

    doc, value = _sensor_doc()
    s = compile_schema(doc)
    times = []
    for _ in range(301):
        t0 = time.ticks_us()
        s.validate(value)
        times.append(time.ticks_diff(time.ticks_us(), t0))
    times.sort()
    assert times[150] < 100, times[150]  # about 6 us on a current x64 host
