"""JSON <-> application/x-www-form-urlencoded (apigw.formconv) as tables. Portable.

Objects with more than one key are written with sort_keys=True (MicroPython dicts do not keep
insertion order). The expected loads results are what urllib.parse.parse_qsl(keep_blank_values=
True) gives, grouped by key; host_tests/cpython/test_conv_interop.py checks that against urllib.
"""

from apigw import formconv, xmlconv
from apigw.formconv import ConvError
from check import raises

# (object, expected bytes)
DUMPS = (
    ({}, b""),
    ({"a": "1"}, b"a=1"),
    ({"a": "x", "b": "y"}, b"a=x&b=y"),
    ({"n": 42, "f": -1.5, "t": True, "u": False}, b"f=-1.5&n=42&t=true&u=false"),
    ({"big": 12345678901234567890, "e": 1e20}, b"big=12345678901234567890&e=1e%2B20"),
    ({"z": None}, b"z="),
    ({"k": [1, "two", None, True]}, b"k=1&k=two&k=&k=true"),
    ({"k": [], "j": "x"}, b"j=x"),
    ({"k": []}, b""),
    ({"k": ("a", "b")}, b"k=a&k=b"),
    ({"s": "a b+c&d=e"}, b"s=a+b%2Bc%26d%3De"),
    ({"keep": "azAZ09*-._"}, b"keep=azAZ09*-._"),
    ({"esc": "~!'()/?#[]@$,;:%"}, b"esc=%7E%21%27%28%29%2F%3F%23%5B%5D%40%24%2C%3B%3A%25"),
    ({"ctl": "\x00\t\n\r\x7f"}, b"ctl=%00%09%0A%0D%7F"),
    ({"u": "caf\u00e9 \u65e5 \U0001f600"}, b"u=caf%C3%A9+%E6%97%A5+%F0%9F%98%80"),
    ({"a key": "v", "k\u00e9": "v", "": ""}, b"=&a+key=v&k%C3%A9=v"),
)

# (object, text the ConvError message contains)
DUMPS_ERRORS = (
    ([1, 2], "needs a JSON object"),
    ("a=1", "needs a JSON object"),
    (None, "needs a JSON object"),
    ({"o": {"a": 1}}, "nested object under 'o'"),
    ({"l": [[1]]}, "under 'l'"),
    ({"l": [1, {"a": 1}]}, "under 'l'"),
    ({"f": float("nan")}, "NaN"),
    ({"f": [float("inf")]}, "Infinity"),
    ({"b": b"x"}, "not a JSON scalar under 'b'"),
    ({1: "x"}, "not a string"),
)

# (data, loads kwargs, expected dict)
LOADS = (
    (b"", {}, {}),
    (b"a=1", {}, {"a": "1"}),
    (b"a=1&b=2", {}, {"a": "1", "b": "2"}),
    (b"a=1&a=2&b=3&a=4", {}, {"a": ["1", "2", "4"], "b": "3"}),
    (b"a=1", {"list_keys": ("a",)}, {"a": ["1"]}),
    (b"a=1&a=2", {"list_keys": ("a", "b")}, {"a": ["1", "2"]}),
    (b"a", {}, {"a": ""}),
    (b"a=", {}, {"a": ""}),
    (b"=", {}, {"": ""}),
    (b"=v", {}, {"": "v"}),
    (b"&&a=1&&&b=2&", {}, {"a": "1", "b": "2"}),
    (b"a=1=2", {}, {"a": "1=2"}),
    (b"a;b=1;c", {}, {"a;b": "1;c"}),
    (b"s=a+b%2Bc%26d%3De", {}, {"s": "a b+c&d=e"}),
    (b"%61%62=%7e%7E", {}, {"ab": "~~"}),
    (b"+%20+=+", {}, {"   ": " "}),
    (b"%zz=%4&x=%&y=%%41&z=%4g", {}, {"%zz": "%4", "x": "%", "y": "%A", "z": "%4g"}),
    (b"%41%2", {}, {"A%2": ""}),
    (b"u=caf%C3%A9+%e6%97%a5", {}, {"u": "caf\u00e9 \u65e5"}),
    ("u=caf\u00e9".encode(), {}, {"u": "caf\u00e9"}),
    ("u=caf\u00e9", {}, {"u": "caf\u00e9"}),
    (b"n=%00%0A", {}, {"n": "\x00\n"}),
    (
        b"i=42&f=-1.5&e=1e%2B20&t=true&u=false&z=&s=007&x=1.&h=0x1",
        {"typed": True},
        {"i": 42, "f": -1.5, "e": 1e20, "t": True, "u": False, "z": "", "s": "007", "x": "1.", "h": "0x1"},
    ),
    (b"k=1&k=x", {"typed": True}, {"k": [1, "x"]}),
    (memoryview(b"a=1"), {}, {"a": "1"}),
    (bytearray(b"a=1"), {}, {"a": "1"}),
)

# (data, byte offset, text the message contains)
LOADS_ERRORS = (
    (b"a=%ff", 2, "invalid UTF-8"),
    (b"ok=1&a%C3=1", 5, "invalid UTF-8"),
    (b"a=\xff", 2, "invalid UTF-8"),
    (b"a=%ED%A0%80", 2, "invalid UTF-8"),
)


def test_dumps_table():
    for obj, want in DUMPS:
        got = formconv.dumps(obj, sort_keys=True)
        assert got == want, (obj, got)


def test_dumps_errors():
    for obj, fragment in DUMPS_ERRORS:
        e = raises(ConvError, formconv.dumps, obj)
        assert fragment in str(e), (obj, str(e))


def test_loads_table():
    for data, kw, want in LOADS:
        got = formconv.loads(data, **kw)
        assert got == want, (data, kw, got)


def test_loads_errors():
    for data, offset, fragment in LOADS_ERRORS:
        e = raises(ConvError, formconv.loads, data)
        assert e.offset == offset and fragment in str(e), (data, e.offset, str(e))


def test_field_cap():
    assert len(formconv.loads(b"&".join([b"a=1"] * 256))["a"]) == 256
    e = raises(ConvError, formconv.loads, b"&".join([b"a=1"] * 257))
    assert "more than 256 fields" in str(e) and e.offset == 4 * 256
    raises(ConvError, formconv.loads, b"a&b&c", max_fields=2)
    assert formconv.loads(b"&&&&&&a", max_fields=1) == {"a": ""}  # empty pieces do not count


def test_one_error_class():
    assert formconv.ConvError is xmlconv.ConvError
    assert issubclass(ConvError, ValueError)


def test_round_trip():
    obj = {"name": "gw 1", "port": 8080, "ratio": 0.5, "on": True, "tags": ["a&b", "c=d", "\u00e9"], "s": "x+y%"}
    assert formconv.loads(formconv.dumps(obj), typed=True) == obj
    assert formconv.loads(formconv.dumps({"k": [7]}), typed=True, list_keys=("k",)) == {"k": [7]}
    # the documented exceptions
    assert formconv.loads(formconv.dumps({"k": [7]}), typed=True) == {"k": 7}
    assert formconv.loads(formconv.dumps({"k": "7", "n": None, "e": []}), typed=True) == {"k": 7, "n": ""}


def test_every_byte_value():
    raw = "".join(chr(c) for c in range(1, 256)) + "\U0001f600"
    data = formconv.dumps({"k": raw})
    assert data.count(b"%") == len(raw.encode()) - 67  # 66 bytes kept, space as '+'
    kept = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._%+="
    for c in data:
        assert c in kept, c
    assert formconv.loads(data) == {"k": raw}


def test_strict_utf8():
    # MicroPython's decoder accepts these; both runtimes must refuse them the same way.
    for bad in (b"%C0%80", b"%C1%BF", b"%E0%80%80", b"%F0%80%80%80", b"%F4%90%80%80", b"%F5%80%80%80", b"%ED%BF%BF"):
        e = raises(ConvError, formconv.loads, b"k=" + bad)
        assert e.offset == 2, bad
    for good in (b"%C2%80", b"%E0%A0%80", b"%ED%9F%BF", b"%EE%80%80", b"%F0%90%80%80", b"%F4%8F%BF%BF"):
        assert len(formconv.loads(b"k=" + good)["k"]) == 1, good
    raises(ConvError, formconv.dumps, {"k": "\ud800"})
