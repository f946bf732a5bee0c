"""JSON <-> XML (apigw.xmlconv) as tables of cases. Portable: runs under pytest and the unix port.

Objects with more than one key are written with sort_keys=True: MicroPython dicts do not keep
insertion order, and the tables must read the same on both runtimes.
"""

from apigw import xmlconv
from apigw.xmlconv import ConvError
from check import raises

H = b'<?xml version="1.0" encoding="UTF-8"?>'

# (value, root, expected bytes after the declaration)
DUMPS = (
    ({}, "root", b"<root/>"),
    ("", "root", b"<root></root>"),
    ("hi", "msg", b"<msg>hi</msg>"),
    (None, "root", b'<root nil="true"/>'),
    (True, "root", b"<root>true</root>"),
    (False, "root", b"<root>false</root>"),
    (-12, "root", b"<root>-12</root>"),
    (1.5, "root", b"<root>1.5</root>"),
    (1e20, "root", b"<root>1e+20</root>"),
    (12345678901234567890, "root", b"<root>12345678901234567890</root>"),
    ({"a": 1, "b": "x"}, "root", b"<root><a>1</a><b>x</b></root>"),
    ({"a": {"b": {"c": None}}}, "r", b'<r><a><b><c nil="true"/></b></a></r>'),
    ({"k": [1, 2, 3]}, "r", b"<r><k>1</k><k>2</k><k>3</k></r>"),
    ({"k": []}, "r", b"<r/>"),
    ({"k": [[1, 2], [3]]}, "r", b"<r><k><item>1</item><item>2</item></k><k><item>3</item></k></r>"),
    ({"k": [{"a": 1}, {"b": 2}]}, "r", b"<r><k><a>1</a></k><k><b>2</b></k></r>"),
    ([1, "two", None], "list", b'<list><item>1</item><item>two</item><item nil="true"/></list>'),
    ([], "list", b"<list/>"),
    ([[]], "list", b"<list><item/></list>"),
    ("a<b & c>d", "t", b"<t>a&lt;b &amp; c&gt;d</t>"),
    ("q\"'", "t", b"<t>q\"'</t>"),
    ("tab\tlf\ncr\rcrlf\r\n", "t", b"<t>tab\tlf\ncr&#13;crlf&#13;\n</t>"),
    ("]]>", "t", b"<t>]]&gt;</t>"),
    ("caf\u00e9 \u65e5\u672c \U0001f600", "t", "<t>caf\u00e9 \u65e5\u672c \U0001f600</t>".encode()),
    ("\x7f\x85\ud7ff\ue000\ufffd", "t", "<t>\x7f\x85\ud7ff\ue000\ufffd</t>".encode()),
    ({"@id": 7, "@ok": True, "#text": "x"}, "e", b'<e id="7" ok="true">x</e>'),
    ({"@a": 'q"<&>', "@b": "t\tn\nr\r"}, "e", b'<e a="q&quot;&lt;&amp;&gt;" b="t&#9;n&#10;r&#13;"/>'),
    ({"@a": None, "b": 1}, "e", b"<e><b>1</b></e>"),
    ({"#text": "t", "c": "d"}, "e", b"<e>t<c>d</c></e>"),
    ({"#text": None}, "e", b"<e/>"),
    ({"@xmlns:p": "urn:x", "p:a": "1"}, "p:r", b'<p:r xmlns:p="urn:x"><p:a>1</p:a></p:r>'),
    ({"_a.b-c": 1, "\u00e9t\u00e9": 2}, "r", "<r><_a.b-c>1</_a.b-c><\u00e9t\u00e9>2</\u00e9t\u00e9></r>".encode()),
    ({"item": 1}, "r", b"<r><item>1</item></r>"),
)

# (value, root, text the ConvError message contains)
DUMPS_ERRORS = (
    ({"a b": 1}, "r", "'a b'"),
    ({"1a": 1}, "r", "'1a'"),
    ({"": 1}, "r", "''"),
    ({"-a": 1}, "r", "'-a'"),
    ({"a\u00d7b": 1}, "r", "not an XML name"),
    ({"\ud800": 1}, "r", "not an XML name"),
    ({"k": "\ud800"}, "r", "not allowed"),
    ({"#other": 1}, "r", "'#other'"),
    ({"@": 1}, "r", "'@'"),
    ({"@a b": 1}, "r", "'@a b'"),
    ({"@a": [1]}, "r", "'@a'"),
    ({"@a": {"b": 1}}, "r", "'@a'"),
    ({1: "x"}, "r", "not a string"),
    ("ok", "bad root", "'bad root'"),
    ({"k": "a\x00b"}, "r", "control character 0x00 under 'k'"),
    ({"k": "a\x1bb"}, "r", "control character 0x1b"),
    ({"@k": "\x0c"}, "r", "control character 0x0c under '@k'"),
    ({"k": "\ufffe"}, "r", "not allowed"),
    ({"k": "\uffff"}, "r", "not allowed"),
    ({"k": float("nan")}, "r", "NaN"),
    ({"k": float("inf")}, "r", "Infinity"),
    ({"k": b"bytes"}, "r", "not a JSON scalar under 'k'"),
)

# (document, loads kwargs, expected (root, value))
LOADS = (
    (b"<r/>", {}, ("r", "")),
    (b"<r></r>", {}, ("r", "")),
    (b"<r>  x  </r>", {}, ("r", "  x  ")),
    (b"<r><a>1</a><b>true</b><c/></r>", {}, ("r", {"a": "1", "b": "true", "c": ""})),
    (
        b"<r><a>1</a><b>true</b><c>1.5e3</c><d>007</d><e>-0</e></r>",
        {"typed": True},
        ("r", {"a": 1, "b": True, "c": 1500.0, "d": "007", "e": 0}),
    ),
    (b"<r><k>1</k><k>2</k><j>3</j></r>", {}, ("r", {"k": ["1", "2"], "j": "3"})),
    (b"<r><k>1</k></r>", {"list_keys": ("k",)}, ("r", {"k": ["1"]})),
    (b"<r><k>1</k><k>2</k></r>", {"list_keys": ("k",)}, ("r", {"k": ["1", "2"]})),
    (b"<r><item>1</item><item>2</item></r>", {}, ("r", ["1", "2"])),
    (b"<r><item>1</item></r>", {}, ("r", ["1"])),
    (b"<r><item>1</item></r>", {"item": None}, ("r", {"item": "1"})),
    (b'<r a="1"><item>1</item></r>', {}, ("r", {"@a": "1", "item": "1"})),
    (b"<r><item><item>1</item></item></r>", {}, ("r", [["1"]])),
    (b'<r nil="true"/>', {}, ("r", {"@nil": "true"})),
    (b'<r nil="true"/>', {"typed": True}, ("r", None)),
    (b'<r nil="true">x</r>', {"typed": True}, ("r", {"@nil": True, "#text": "x"})),
    (b"<r id=\"5\" n='x'>t</r>", {"typed": True}, ("r", {"@id": 5, "@n": "x", "#text": "t"})),
    (b"<r>\n  <a>1</a>\n  <b>2</b>\n</r>\n", {}, ("r", {"a": "1", "b": "2"})),
    (b"<r>x<a/>y<b/> </r>", {}, ("r", {"a": "", "b": "", "#text": "xy"})),
    (b"<r> x <a/> y </r>", {}, ("r", {"a": "", "#text": " x  y "})),
    (b'<r a="1">\n</r>', {}, ("r", {"@a": "1", "#text": "\n"})),
    (b"<r>&amp;&lt;&gt;&quot;&apos;</r>", {}, ("r", "&<>\"'")),
    (b"<r>&#65;&#x42;&#x1F600;&#233;&#9;</r>", {}, ("r", "AB\U0001f600\u00e9\t")),
    (b"<r>a<![CDATA[<b>&amp;]]>c</r>", {}, ("r", "a<b>&amp;c")),
    (b"<r><![CDATA[]]></r>", {}, ("r", "")),
    (b"<r>a\r\nb\rc\n</r>", {}, ("r", "a\nb\nc\n")),
    (b"<r><![CDATA[a\r\nb]]></r>", {}, ("r", "a\nb")),
    (b'<r a="x\ty\nz\r\nw" b="&#9;&#10;&#13;"/>', {}, ("r", {"@a": "x y z w", "@b": "\t\n\r"})),
    (b"<r>a > b</r>", {}, ("r", "a > b")),
    ("<r>caf\u00e9</r>".encode(), {}, ("r", "caf\u00e9")),
    ("<r>caf\u00e9</r>", {}, ("r", "caf\u00e9")),
    (b"\xef\xbb\xbf<r/>", {}, ("r", "")),
    (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<r/>', {}, ("r", "")),
    (b"<?xml version='1.0' encoding='us-ascii'?><r/>", {}, ("r", "")),
    (b"<?xml version='1.0'?><!-- c --><?pi data?><!DOCTYPE r><r><!--x-->a<?p?>b</r><!--e--><?q?> \n", {}, ("r", "ab")),
    (b'<!DOCTYPE r PUBLIC "-//A//B" "http://x/y[1]>"><r/>', {}, ("r", "")),
    (
        b'<p:r xmlns:p="urn:x" xmlns="urn:d"><p:a>1</p:a></p:r>',
        {},
        ("p:r", {"@xmlns:p": "urn:x", "@xmlns": "urn:d", "p:a": "1"}),
    ),
    ('<\u00e9t\u00e9 \u00e0="1"/>'.encode(), {}, ("\u00e9t\u00e9", {"@\u00e0": "1"})),
    (b"<r a = '1'\n b=\"2\" ></r >", {}, ("r", {"@a": "1", "@b": "2"})),
    (memoryview(b"<r>m</r>"), {}, ("r", "m")),
    (bytearray(b"<r>m</r>"), {}, ("r", "m")),
)

# (document, byte offset of the error, text the message contains)
MALFORMED = (
    (b"", 0, "no root"),
    (b"  \n", 3, "no root"),
    (b"<!-- only -->", 13, "no root"),
    (b"<r>", 0, "unclosed element"),
    (b"<r><a></r>", 6, "mismatched end tag"),
    (b"<r></rr>", 3, "mismatched end tag"),
    (b"<r></r", 3, "bad end tag"),
    (b"</r>", 0, "end tag without start tag"),
    (b"<r/><r/>", 4, "junk after the root"),
    (b"<r/>x", 4, "junk after the root"),
    (b"x<r/>", 0, "text before the root"),
    (b"<r>1 < 2</r>", 6, "bad name"),
    (b"<r>a&b</r>", 4, "bad reference"),
    (b"<r>&foo;</r>", 3, "bad reference"),
    (b"<r>&#0;</r>", 3, "bad reference"),
    (b"<r>&#xD800;</r>", 3, "bad reference"),
    (b"<r>&#x110000;</r>", 3, "bad reference"),
    (b"<r>&#x;</r>", 3, "bad reference"),
    (b"<r>&#12a;</r>", 3, "bad reference"),
    (b"<r>&#1234567890123;</r>", 3, "bad reference"),
    (b"<r>a]]>b</r>", 4, "']]>' in text"),
    (b"<r>\x01</r>", 3, "control character 0x01"),
    (b'<r a="\x1f"/>', 6, "control character 0x1f"),
    (b"<r>\xff</r>", 3, "invalid UTF-8"),
    (b"<r>\xed\xa0\x80</r>", 3, "not allowed"),
    (b"<r>\xc0\x80</r>", 3, "invalid UTF-8"),
    (b"<r>\xf4\x90\x80\x80</r>", 3, "invalid UTF-8"),
    (b"<r\xc1\xa1/>", 1, "bad name"),
    (b"<r>\xef\xbf\xbe</r>", 3, "not allowed"),
    (b"<1r/>", 1, "bad name"),
    (b"<r\xff/>", 1, "bad name"),
    (b"<r a/>", 3, "bad attribute"),
    (b"<r a=1/>", 3, "bad attribute"),
    (b'<r a="1"b="2"/>', 8, "bad start tag"),
    (b'<r a="1" a="2"/>', 9, "duplicate attribute"),
    (b'<r a="1/>', 5, "unterminated attribute value"),
    (b'<r a="<"/>', 6, "'<' in an attribute value"),
    (b'<r a="&bad;"/>', 6, "bad reference"),
    (b"<r", 0, "unclosed start tag"),
    (b"<", 1, "bad name"),
    (b"<r><!-- x", 3, "unterminated comment"),
    (b"<r><!-- a -- b --></r>", 3, "'--' in a comment"),
    (b"<r><![CDATA[x</r>", 3, "unterminated CDATA"),
    (b"<![CDATA[x]]><r/>", 0, "CDATA outside the root"),
    (b"<r><?pi x</r>", 3, "unterminated processing instruction"),
    (b"<r><?>x</r>", 3, "unterminated processing instruction"),
    (b"<r><!ELEMENT r ANY></r>", 3, "bad markup declaration"),
    (b' <?xml version="1.0"?><r/>', 1, "XML declaration not at the start"),
    (b'<?xml version="1.0"', 0, "unterminated XML declaration"),
    (b'<?xml version="1.0" encoding="ISO-8859-1"?><r/>', 20, "unsupported encoding"),
    (b'<?xml version="1.0" encoding=UTF-8?><r/>', 0, "bad XML declaration"),
    (b'<!DOCTYPE r [<!ENTITY a "aaaa">]><r>&a;</r>', 12, "internal subset"),
    (b"<!DOCTYPE r><!DOCTYPE r><r/>", 12, "misplaced DOCTYPE"),
    (b"<r><!DOCTYPE r></r>", 3, "misplaced DOCTYPE"),
    (b"<!DOCTYPE r SYSTEM 'x", 0, "unterminated DOCTYPE"),
)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"""


def test_dumps_table():
    for value, root, want in DUMPS:
        got = xmlconv.dumps(value, root, sort_keys=True)
        assert got == H + want, (value, got)


def test_dumps_errors():
    for value, root, fragment in DUMPS_ERRORS:
        e = raises(ConvError, xmlconv.dumps, value, root)
        assert fragment in str(e), (value, str(e))
        assert e.offset == -1


def test_dumps_tuple_is_an_array():
    assert xmlconv.dumps((1, 2), "r") == H + b"<r><item>1</item><item>2</item></r>"


def test_dumps_depth_cap():
    deep = 1
    for _ in range(31):
        deep = [deep]
    assert xmlconv.dumps(deep).count(b"<item>") == 31  # 32 levels: allowed
    e = raises(ConvError, xmlconv.dumps, [deep])
    assert "deeper than 32" in str(e)
    nested = {}
    for _ in range(300):  # no recursion: a deep value costs a ConvError, not a RecursionError
        nested = {"a": nested}
    raises(ConvError, xmlconv.dumps, nested)
    assert xmlconv.dumps(nested, max_depth=301).count(b"<a>") == 299


def test_loads_table():
    for data, kw, want in LOADS:
        got = xmlconv.loads(data, **kw)
        assert got == want, (data, kw, got)


def test_malformed():
    for data, offset, fragment in MALFORMED:
        e = raises(ConvError, xmlconv.loads, data)
        assert e.offset == offset and fragment in str(e), (data, e.offset, str(e))
        assert str(e).endswith("at byte %d" % offset)


def test_billion_laughs_refused():
    e = raises(ConvError, xmlconv.loads, BILLION_LAUGHS)
    assert "internal subset" in str(e)


def test_depth_cap():
    ok = b"<a>" * 32 + b"</a>" * 32
    assert xmlconv.loads(ok)[0] == "a"
    e = raises(ConvError, xmlconv.loads, b"<a>" * 33 + b"</a>" * 33)
    assert "too deep" in str(e) and e.offset == 96
    e = raises(ConvError, xmlconv.loads, b"<a>" * 32 + b"<b/>" + b"</a>" * 32)
    assert "too deep" in str(e)
    e = raises(ConvError, xmlconv.loads, b"<a>" * 3000)  # refused early, no recursion at all
    assert "too deep" in str(e)
    assert xmlconv.loads(b"<a><b/></a>", max_depth=2) == ("a", {"b": ""})
    raises(ConvError, xmlconv.loads, b"<a><b/></a>", max_depth=1)


def test_element_cap():
    doc = b"<r>" + b"<a/>" * 1023 + b"</r>"
    assert len(xmlconv.loads(doc)[1]["a"]) == 1023
    e = raises(ConvError, xmlconv.loads, b"<r>" + b"<a/>" * 1024 + b"</r>")
    assert "too many elements" in str(e) and e.offset == 3 + 4 * 1023
    raises(ConvError, xmlconv.loads, b"<r><a/><a/></r>", max_elements=2)


ROUND_TRIP = (
    {"name": "gw", "port": 8080, "ratio": 0.25, "on": True, "off": False, "none": None},
    {"tags": ["a", "b", "c"], "matrix": [[1, 2], [3, 4]], "objs": [{"x": "1a"}, {"y": []}]},
    {"@id": 42, "#text": "body", "child": {"@k": "v", "deep": {"deeper": "x"}}},
    [1, "two", [3, 4], {"five": 5}, None],
    ["single"],
    {"text": "  spaced  ", "esc": "<&>\"'\t\n\r", "uni": "\u00e9\U0001f600"},
    {"@xmlns:p": "urn:x", "p:a": "q"},
    "scalar",
    -7,
)


def test_round_trip():
    for value in ROUND_TRIP:
        got = xmlconv.loads(xmlconv.dumps(value, "r"), typed=True)
        want = value
        if isinstance(value, dict) and "objs" in value:  # {"y": []}: an empty array vanishes
            want = dict(value, objs=[{"x": "1a"}, ""])
        assert got == ("r", want), (value, got)


def test_round_trip_exceptions():
    def rt(value, **kw):
        return xmlconv.loads(xmlconv.dumps(value, "r"), typed=True, **kw)[1]

    assert rt({"k": [5]}) == {"k": 5}
    assert rt({"k": [5]}, list_keys=("k",)) == {"k": [5]}
    assert rt({"k": "5"}) == {"k": 5}
    assert rt({"k": "true"}) == {"k": True}
    assert rt({"k": {}}) == {"k": ""}
    assert rt({"item": 3}) == [3]
    assert rt({"@nil": "true"}) is None
    assert rt({"#text": "t"}) == "t"
    assert rt({"k": [[1]]}) == {"k": [1]}
    assert rt({"k": [[1]]}, list_keys=("k",)) == {"k": [[1]]}


def test_every_prefix_fails_cleanly():
    doc = xmlconv.dumps({"@a": "1&2", "b": ["x", "y<"], "c": {"d": None}}, "r", sort_keys=True)
    doc = doc[:-4] + b"<!--c--><![CDATA[z]]>&#233;" + doc[-4:]
    assert xmlconv.loads(doc)[1]["#text"] == "z\u00e9"
    for n in range(len(doc)):
        try:
            xmlconv.loads(doc[:n])
        except ConvError as e:
            assert 0 <= e.offset <= n
        else:
            assert n == 0, n  # only the whole document parses


def test_mutations_fail_cleanly():
    doc = bytearray(b'<?xml version="1.0"?><r a="1"><b>x&amp;y</b><!--c--><c><![CDATA[<d>]]></c></r>')
    seed = 12345
    for _ in range(400):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        pos = seed % len(doc)
        old = doc[pos]
        doc[pos] = (seed >> 8) & 0xFF
        try:
            xmlconv.loads(doc)  # parses, or raises ConvError: never another exception
        except ConvError:
            pass
        doc[pos] = old
