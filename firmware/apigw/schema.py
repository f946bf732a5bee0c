"""JSON Schema (a draft 2020-12 subset) for the mediation stage: compiled at config load, checked
per request.

compile_schema(doc) turns a parsed schema into nested tuples (a node per subschema: integer slots,
small int keyword codes) or raises SchemaError with a JSON pointer into the schema. validate()
walks the instance once in document order (a value's own keywords, then its items or members) and
answers None or (pointer, keyword) for the first failure. A valid instance allocates nothing but a
40-byte match object per pattern search. MicroPython's dict keeps no insertion order: there an
object's members are taken in the dict's order. A value of a type json.loads does not make fails
"type" wherever a constraining subschema sees it. Validation descends MAX_DEPTH levels and answers
(pointer, "depth") below that (schemas may nest twice as deep), and "depth" too if the C stack of a
small board runs out first.

Semantics: "integer" takes 1.0; booleans are not numbers; exclusiveMinimum/Maximum are numbers;
lengths count code points; enum/const use JSON equality (1 == 1.0, true != 1); items is one schema
(the list form is refused); additionalProperties covers the keys not in properties.

pattern: an unanchored search in the ECMA-262 subset that MicroPython's re and CPython's re run
alike: literals, ".", classes, \\d \\w \\s \\D \\W \\S (ASCII, as in ECMA-262), escaped punctuation,
\\n \\t \\r \\f \\v, (...), (?:...), |, ^, $, * + ? and lazy *? +? ??. Refused: {m,n}, lookaround,
backreferences, \\b, \\x, \\u, other (?...) groups, characters outside printable ASCII but tab and
newline, repeats of a group that can match empty. "$" is the end of the string and "." any character
but a newline (Python's "$" also matches before a final newline: jsonschema differs there). The re
of MicroPython recurses on each repeat and alternative it takes, so a pattern with repeats needs a
maxLength that keeps those frames within PATTERN_FRAMES (see _pattern). Backtracking time is not
bounded: nested repeats such as (a+)+ are slow on crafted input.

This module owns schema compilation and instance checking only: it does not parse JSON, read
config files or build HTTP responses, and it does no I/O.
"""

import re

from .compat import IS_MICROPYTHON, const, micropython

SUPPORTED = ("type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum",
             "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
             "minItems", "maxItems")  # fmt: skip
ANNOTATIONS = ("$schema", "$id", "$comment", "title", "description", "default", "examples")
KEYWORDS = SUPPORTED + ("false", "depth")  # a failure's keyword code indexes this
MAX_DEPTH = const(32)
PATTERN_FRAMES = 256  # re recursion frames a search may take (about 80 bytes each on x64)
TYPES = {"null": 1, "boolean": 2, "integer": 4, "number": 12, "string": 16, "array": 32, "object": 64}

_TYPE = const(0)  # keyword codes: indexes into SUPPORTED / KEYWORDS
_REQUIRED = const(2)
_ADDL = const(3)
_ENUM = const(5)
_CONST = const(6)
_MIN = const(7)
_MAX = const(8)
_XMIN = const(9)
_XMAX = const(10)
_MINLEN = const(11)
_PATTERN = const(13)
_MINITEMS = const(14)
_FALSE = const(16)
_DEPTH = const(17)
_INT = const(4)  # type bits (TYPES): a float without a fraction counts as _INT where it must
_NUM = const(8)
_STR = const(16)
_ARR = const(32)
_OBJ = const(64)
_ANY = const(127)
_BITS = {type(None): 1, bool: 2, int: _INT, float: _NUM, str: _STR, list: _ARR, dict: _OBJ}

# A node is (mask, type label, eq, num, txt, arr, obj); None is the schema that takes anything.
#   eq   (code, values, ...): enum / const, values a tuple (const: of one)
#   num  (code, limit, ...): minimum, maximum, exclusiveMinimum, exclusiveMaximum present
#   txt  (minLength, maxLength or None, re or None, wide, pattern); wide: can match non-ASCII
#   arr  (minItems, maxItems or None, items node)
#   obj  (required tuple, {name: node}, extra): extra None (any), False, or a node
_FALSE_NODE = (0, "false", None, None, None, None, None)
_ASCII = 0 if IS_MICROPYTHON else re.ASCII  # \d \w \s as MicroPython (and ECMA-262) have them
_EOS = "$" if IS_MICROPYTHON else "\\Z"
_NON_ASCII = re.compile("[^\x01-\x7e]") if IS_MICROPYTHON else None
_CTRL = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
_WIDE = ("\\D", "\\W", "\\S")


class SchemaError(ValueError):
    """A schema compile_schema() refuses: .path is a JSON pointer into the schema."""

    def __init__(self, path, message):
        super().__init__((path or "(root)") + ": " + message)
        self.path = path
        self.message = message


def _esc(key):
    key = key if type(key) is str else str(key)
    return key.replace("~", "~0").replace("/", "~1")


def _finite(v):
    return (type(v) is int or type(v) is float) and v == v and v - v == 0


def _count(doc, path, key):
    v = doc.get(key)
    if type(v) is float and _finite(v) and v == int(v):
        v = int(v)
    if v is not None and (type(v) is not int or v < 0):
        raise SchemaError(path + "/" + key, "must be a non-negative integer")
    return v


def _json(v, path, depth):
    """Refuse what is not a JSON value (enum / const), or nests deeper than 2 * MAX_DEPTH."""
    t = type(v)
    if depth > 2 * MAX_DEPTH:
        raise SchemaError(path, "nested deeper than %d" % (2 * MAX_DEPTH))
    for k in v if t is dict or t is list else ():
        if t is dict and type(k) is not str:
            raise SchemaError(path, "object keys must be strings")
        _json(v[k] if t is dict else k, path, depth + 1)
    if t is float and not _finite(v) or t not in _BITS:
        raise SchemaError(path, "not a JSON value: %r" % (v,))


def _lit(c):
    """One character as pattern text: punctuation escaped, so that it is literal in a class too."""
    return c if c.isalpha() or c.isdigit() or c < " " else "\\" + c


def _char(p, i, bad):
    """The character or escape at p[i]: (a character or a shorthand such as "\\d", next index)."""
    c = p[i]
    if c != "\\":
        if c in "[]":
            bad("escape [ and ] in a class")
        if not (" " <= c <= "~" or c in "\t\n\r\f\v"):
            bad("character %r" % c)
        return c, i + 1
    e = p[i + 1] if i + 1 < len(p) else ""
    if e and e in "dDwWsS":
        return "\\" + e, i + 2
    if e in _CTRL:
        return _CTRL[e], i + 2
    if not e or e.isalpha() or e.isdigit() or not (" " <= e <= "~"):
        bad("escape \\" + e)
    return e, i + 2


def _class(p, i, bad):
    """Translate the class whose "[" is p[i - 1]: (index after its "]", text, wide)."""
    neg = p.startswith("^", i)
    i += neg
    out, wide, first = "[^" if neg else "[", neg, i
    while True:
        if i >= len(p):
            bad("unterminated [")
        if p[i] == "]" and i > first:
            return i + 1, out + "]", wide
        c, i = _char(p, i, bad)
        if len(c) > 1:
            wide = wide or c in _WIDE
            out += c
        elif p.startswith("-", i) and i + 1 < len(p) and p[i + 1] != "]":
            hi, i = _char(p, i + 1, bad)
            if len(hi) > 1 or hi < c:
                bad("bad range %s-%s" % (c, hi))
            out += _lit(c) + "-" + _lit(hi)
        else:
            out += _lit(c)


def _pattern(p, maxlen, path):
    """Check p against the subset and translate it: (compiled re, wide).

    MicroPython's re holds a recursion frame for each repeat (* + ?) and alternative (|) taken on
    the current path. One outside every loop is taken at most once; one inside a loop at most once
    per character, as no loop body can match empty: frames <= looped * (len + 1) + rest + 2."""

    def bad(why):
        raise SchemaError(path, why)

    if type(p) is not str:
        bad("must be a string")
    out, stack = [], []  # stack: (alt, seq, splits, looped) where each group opened
    alt, seq, before = False, True, True  # a finished branch / this branch / seq before the atom
    last = None  # whether the last atom can match empty; None: nothing to repeat there
    inner = (0, 0)  # splits and looped inside the last atom
    wide, splits, looped, i = False, 0, 0, 0
    while i < len(p):
        c = p[i]
        if c in "*+?":
            if last is not False:
                bad(("nothing to repeat at %d" if last is None else "repeat of what can match empty at %d") % i)
            lazy = p.startswith("?", i + 1)
            out.append(c + "?" if lazy else c)
            i, seq, last, splits = i + 1 + lazy, seq if c == "+" else before, None, splits + 1
            looped += inner[0] - inner[1] + 1 if c != "?" else 0
            continue
        atom, w, inner = False, c == ".", (0, 0)
        if c == "[":
            i, s, w = _class(p, i + 1, bad)
        elif c == "\\":
            s, i = _char(p, i, bad)
            w = s in _WIDE
            s = s if len(s) > 1 else _lit(s)
        else:
            i += 1
            s = "[^\n]" if w else c  # MicroPython's "." also matches a newline
            if c == "(":
                if p.startswith("?", i) and not p.startswith("?:", i):
                    bad("group (? at %d" % (i - 1))
                i += 2 if p.startswith("?:", i) else 0
                stack.append((alt, seq, splits, looped))
                alt, seq, last = False, True, None
                out.append("(?:")  # MicroPython recurses per capture group entered
                continue
            if c == ")":
                if not stack:
                    bad("unbalanced ) at %d" % (i - 1))
                atom = alt or seq
                alt, seq, s0, l0 = stack.pop()
                inner = (splits - s0, looped - l0)
            elif c in "|^$":
                if c == "|":
                    alt, seq, splits = alt or seq, True, splits + 1
                out.append(_EOS if c == "$" else c)
                last = None
                continue
            elif c in "{}]":
                bad(("counted repeat at %d (escape { and })" if c != "]" else "unescaped ] at %d") % (i - 1))
            elif not w:
                _char(p, i - 1, bad)
        out.append(s)
        wide = wide or w
        before, seq, last = seq, seq and atom, atom
    if stack:
        bad("missing )")
    rest = splits - looped + 2
    if looped and (maxlen is None or looped * (maxlen + 1) + rest > PATTERN_FRAMES):
        bad("%d repeats need maxLength <= %d" % (looped, (PATTERN_FRAMES - rest) // looped - 1))
    if rest > PATTERN_FRAMES:
        bad("too many alternatives")
    try:
        return re.compile("".join(out), _ASCII), wide
    except Exception as e:  # noqa: BLE001 - whatever the engine refuses
        bad(str(e))


def _node(doc, path, depth):
    """Compile one subschema; None for one that takes anything."""
    if doc is True or doc is False:
        return None if doc else _FALSE_NODE
    if type(doc) is not dict:
        raise SchemaError(path, "a schema must be an object or a boolean")
    if depth > 2 * MAX_DEPTH:
        raise SchemaError(path, "nested deeper than %d" % (2 * MAX_DEPTH))
    for k in doc:
        if k not in SUPPORTED and k not in ANNOTATIONS:
            raise SchemaError(path, "unsupported keyword '%s'" % k)
    mask, label, eq, num = _ANY, "JSON", [], []
    names = doc.get("type")
    if names is not None:
        names = [names] if type(names) is str else names
        if type(names) is not list or not names:
            raise SchemaError(path + "/type", "must be a type name or a list of them")
        mask = 0
        for name in names:
            if type(name) is not str or name not in TYPES:
                raise SchemaError(path + "/type", "unknown type %r" % (name,))
            mask |= TYPES[name]
        if len(set(names)) != len(names):
            raise SchemaError(path + "/type", "repeats a type")
        label = "|".join(names)
    for code in (_ENUM, _CONST):
        k = SUPPORTED[code]
        if k in doc:
            if code == _ENUM and type(doc[k]) is not list:
                raise SchemaError(path + "/enum", "must be a list")
            _json(doc[k], path + "/" + k, depth)
            eq += [code, tuple(doc[k]) if code == _ENUM else (doc[k],)]
    for code in (_MIN, _MAX, _XMIN, _XMAX):
        k = SUPPORTED[code]
        if k in doc:
            if not _finite(doc[k]):
                raise SchemaError(path + "/" + k, "must be a finite number")
            num += [code, doc[k]]
    lo, hi = _count(doc, path, "minLength"), _count(doc, path, "maxLength")
    rx, wide = _pattern(doc["pattern"], hi, path + "/pattern") if "pattern" in doc else (None, False)
    txt = (lo or 0, hi, rx, wide, doc.get("pattern")) if lo or hi is not None or rx is not None else None
    items = doc.get("items", True)
    if type(items) is list:
        raise SchemaError(path + "/items", "must be one schema (the list form is not supported)")
    items = _node(items, path + "/items", depth + 1)
    lo, hi = _count(doc, path, "minItems"), _count(doc, path, "maxItems")
    arr = (lo or 0, hi, items) if lo or hi is not None or items is not None else None
    req = doc.get("required", [])
    if type(req) is not list or any(type(k) is not str for k in req) or len(set(req)) != len(req):
        raise SchemaError(path + "/required", "must be a list of unique strings")
    props = doc.get("properties", {})
    if type(props) is not dict:
        raise SchemaError(path + "/properties", "must be an object")
    props = {k: _node(props[k], path + "/properties/" + _esc(k), depth + 1) for k in props}
    extra = doc.get("additionalProperties", True)
    extra = False if extra is False else _node(extra, path + "/additionalProperties", depth + 1)
    obj = (tuple(req), props, extra) if req or extra is not None or any(props.values()) else None
    if mask == _ANY and not eq and not num and txt is arr is obj is None:
        return None
    return (mask, label, tuple(eq) or None, tuple(num) or None, txt, arr, obj)


def compile_schema(doc):
    """The Schema for a parsed JSON Schema document (a dict or a bool); raises SchemaError."""
    return Schema(_node(doc, "", 0))


def _jeq(a, b):
    """JSON equality of a schema constant a and an instance value b (1 == 1.0, True != 1)."""
    ta, tb = type(a), type(b)
    if ta is dict or ta is list:
        if tb is not ta or len(a) != len(b):
            return False
        for k in a if ta is dict else range(len(a)):
            if (ta is dict and k not in b) or not _jeq(a[k], b[k]):
                return False
        return True
    if ta is bool or tb is bool or a is None:
        return a is b
    if ta is str:
        return tb is str and a == b
    return (tb is int or tb is float) and a == b


def _integral(v):
    try:
        return v == int(v)  # allocates a big int for a huge float
    except (OverflowError, ValueError):
        return False


@micropython.native
def _check(n, v, d):
    """None, or the failure as a list [code, arg, innermost key, ..., outermost key]. Native: the
    frame stays off the heap; nothing is allocated unless a check fails or a pattern runs."""
    bit = _BITS.get(type(v), 0)
    mask = n[0]
    if not (mask & bit):
        if mask == 0:
            return [_FALSE, None]
        if bit != _NUM or not (mask & _INT) or not _integral(v):
            return [_TYPE, n[1]]
    s = n[2]
    if s is not None:
        for j in range(0, len(s), 2):
            if bit == _STR:
                ok = v in s[j + 1]  # only a str equals a str
            else:
                ok = False
                for e in s[j + 1]:
                    if _jeq(e, v):
                        ok = True
                        break
            if not ok:
                return [s[j], None]
    if bit == _INT or bit == _NUM:
        s = n[3]
        if s is not None:
            for j in range(0, len(s), 2):
                c = s[j]
                a = s[j + 1]
                if v < a if c == _MIN else v > a if c == _MAX else v <= a if c == _XMIN else v >= a:
                    return [c, a]
    elif bit == _STR or bit == _ARR:
        s = n[4] if bit == _STR else n[5]
        if s is not None:
            ln = len(v)
            if ln < s[0]:
                return [_MINLEN if bit == _STR else _MINITEMS, s[0]]
            if s[1] is not None and ln > s[1]:
                return [_MINLEN + 1 if bit == _STR else _MINITEMS + 1, s[1]]
            if bit == _STR:
                if s[2] is not None:
                    if s[3] and _NON_ASCII is not None and _NON_ASCII.search(v) is not None:
                        # MicroPython's re reads UTF-8 bytes: each non-ASCII character becomes one
                        # DEL, which the pattern matches where it would match that character
                        # (".", [^...], \D \W \S). Allocates, for wide patterns only.
                        v = "".join([ch if ch < "\x80" else "\x7f" for ch in v])
                    try:
                        if s[2].search(v) is None:
                            return [_PATTERN, s[4]]
                    except RuntimeError:  # the C stack ran out (a board with a small one)
                        return [_DEPTH, MAX_DEPTH]
            elif s[2] is not None and ln:
                if d >= MAX_DEPTH:
                    return [_DEPTH, MAX_DEPTH, 0]
                for i in range(ln):
                    r = _check(s[2], v[i], d + 1)
                    if r is not None:
                        r.append(i)
                        return r
    elif bit == _OBJ:
        s = n[6]
        if s is not None:
            for k in s[0]:
                if k not in v:
                    return [_REQUIRED, k]
            props = s[1]
            extra = s[2]
            if extra is False:
                for k in v:
                    if k not in props:
                        return [_ADDL, k]
            for k in v:
                c = props.get(k, extra)  # None: any value; False: refused above
                if c is not None and c is not False:
                    if d >= MAX_DEPTH:
                        return [_DEPTH, MAX_DEPTH, k]
                    r = _check(c, v[k], d + 1)
                    if r is not None:
                        r.append(k)
                        return r
    return None


def _pointer(f):
    """The RFC 6901 pointer of a failure list (its keys are innermost first)."""
    return "".join(["/" + _esc(f[i]) for i in range(len(f) - 1, 1, -1)])


class Schema:
    """A compiled schema. validate() and errors() do not raise, whatever the value."""

    def __init__(self, node):
        self.node = node  # None: the schema takes anything

    def _fail(self, value):
        if self.node is None:
            return None
        try:
            return _check(self.node, value, 0)
        except RuntimeError:  # the C stack ran out before MAX_DEPTH (a board with a small one)
            return [_DEPTH, MAX_DEPTH]

    def validate(self, value):
        """None when value is valid, else (JSON pointer of the first failing value, keyword).
        Allocates nothing for a valid value but a match object per pattern search."""
        f = self._fail(value)
        return None if f is None else (_pointer(f), KEYWORDS[f[0]])

    def errors(self, value):
        """None when valid, else a short message such as "/temp: maximum 50" or "(root): type
        object", at most 120 characters (keys and patterns come from outside). Allocates."""
        f = self._fail(value)
        if f is None:
            return None
        msg = (_pointer(f) or "(root)") + ": " + KEYWORDS[f[0]]
        msg += "" if f[1] is None else " " + str(f[1])
        return msg if len(msg) <= 120 else msg[:117] + "..."
