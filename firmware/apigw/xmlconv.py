"""JSON values <-> XML for the mediation stage: one documented mapping, not an XML library.

Owns `dumps`, `loads` (a small non-validating parser: the document's structure) and the mapping
below. Lexical rules (names, escaping, references, the prolog) are xmltext's, element values
xmltree's, ConvError and scalar text convtext's. Must not do I/O, know HTTP, expand entities
beyond the five predefined ones, or recurse on the input's structure (explicit stacks: no
RecursionError on any input).

JSON -> XML, `dumps(value, root="root", sort_keys=False, max_depth=32) -> bytes`:
- `<?xml version="1.0" encoding="UTF-8"?>` then the root element; no whitespace is added.
- Object: one child element per key, in the dict's order (MicroPython dicts do not keep insertion
  order: sort_keys=True gives a stable one). A key that is not an XML 1.0 (5th ed.) name raises
  ConvError naming it: nothing is renamed. A prefixed name (p:x) needs "@xmlns:p" from the caller.
- "@name" keys: attributes of that element (scalars; null leaves the attribute out). "#text":
  text content, written before the child elements.
- Array under key k: one <k> per item; an empty array writes nothing. An array at the root, or
  one directly inside an array (then a <k> of its own): <item> children.
- String: & < > escaped, CR as &#13; (a parser turns a raw CR into LF); in attributes also " and
  TAB/LF/CR as references. Characters XML 1.0 forbids (controls other than TAB/LF/CR, U+FFFE,
  U+FFFF, surrogates) raise ConvError. Number: as JSON writes it (NaN/Infinity raise ConvError).
  true/false. null: <k nil="true"/>.

XML -> JSON, `loads(data, typed=False, list_keys=(), item="item", max_depth=32,
max_elements=1024) -> (root_name, value)`:
- UTF-8 only (strict: overlong forms and surrogates refused): a BOM is skipped, another declared
  encoding than UTF-8/US-ASCII is refused. The XML declaration, comments, PIs and a DOCTYPE are
  skipped without checking their content; a DOCTYPE with an internal subset (so any ENTITY) is
  refused: no entity expansion. Namespace rules (bound prefixes) are not checked. The five
  predefined entities and character references are decoded, CDATA is text, CRLF/CR become LF;
  in attribute values TAB/LF/CR become spaces.
- An element with only text (or nothing) is that string ("" if empty). Otherwise an object:
  attributes as "@name", children by name (a repeated name gives a list in document order), text
  as "#text": all of it without child elements, else the segments between children that are not
  whitespace-only, joined. Names are kept as written (p:x); xmlns declarations are "@xmlns...".
- An element whose only content is <item> children (item=None turns this off) is a list.
- list_keys: child names always loaded as lists, even with one element.
- typed=False: every value is a string. typed=True: "true"/"false" and JSON-grammar numbers in
  text and attribute values become bool/int/float; an element holding only nil="true" is null.
- Malformed input, nesting past max_depth, more than max_elements elements: ConvError with a
  short message and `.offset`, the byte offset in data.

Round trip: loads(dumps(x, "r"), typed=True) == ("r", x), except: strings that read as numbers or
true/false come back typed; empty arrays vanish and {} becomes ""; a one-item array under k becomes
its item unless k is in list_keys; an object whose only key is "item" comes back as a list;
"#text" comes back joined; {"@nil": "true"} alone reads as null; floats are the runtime's (boards
have 32-bit floats).

Allocation: both directions allocate (strings, dicts, the output buffer); they run once per
mediated body, off the proxy's hot path. dumps writes into one growing buffer; loads reuses its
element frames and shares one str per repeated name, which keeps its peak heap near json.loads'
for the same value. Unix port, a 10-field object: dumps about 50 us (5.5 KB allocated), loads
about 60 us (4.7 KB), 70 us typed.
"""

from .compat import micropython
from .convtext import ConvError, put, scalar_text, writer, written
from .native import mem_eq, span_in
from .xmltext import T_ATTR, T_CDATA, T_NAME, T_TEXT, T_WS, check_decl, doctype_end, escape, name_bytes, unescape
from .xmltree import add_attr, add_child, add_text, child_starts, close, frame, shared_name

__all__ = ("ConvError", "dumps", "loads")

_HEADER = b'<?xml version="1.0" encoding="UTF-8"?>'
_ARRAY = (list, tuple)  # built once: a tuple literal in isinstance() would be built per call
_CLOSE = object()  # dumps' marker for an end tag on its work stack


@micropython.native
def _tags(k):
    """(b"<k", b"<k>", b"</k>", b"k") for the element name k; ConvError if k is not an XML name."""
    b = name_bytes(k, k)
    return (b"<" + b, b"<" + b + b">", b"</" + b + b">", b)


_ITEM = _tags("item")


def dumps(value, root="root", sort_keys=False, max_depth=32):
    """XML document bytes for a JSON value (see the module docstring for the mapping)."""
    out = writer(512)
    put(out, _HEADER)
    tags = {}  # key -> its tags (or ' name="' for "@name"): each distinct key checked once
    # Work stack of (tags, value, depth) triples, flat so that pushing one allocates no tuple;
    # value _CLOSE marks an end tag to write.
    stack = [_tags(root), value, 1]
    while stack:
        depth = stack.pop()
        v = stack.pop()
        t = stack.pop()
        if v is _CLOSE:
            put(out, t[2])
            continue
        if depth > max_depth:
            raise ConvError("nesting deeper than %d" % max_depth)
        if v is None:
            put(out, t[0])
            put(out, b' nil="true"/>')
        elif isinstance(v, dict):
            put(out, t[0])
            text = None
            _push(stack, t, _CLOSE, 0)
            base = len(stack)
            for k in sorted(v) if sort_keys else v:
                x = v[k]
                if not isinstance(k, str):
                    raise ConvError("key is not a string: %r" % (k,))
                if k == "#text":
                    text = x
                    continue
                kt = tags.get(k)
                if k[:1] == "@":
                    if kt is None:
                        kt = tags[k] = b" " + name_bytes(k[1:], k) + b'="'
                    if x is not None:
                        put(out, kt)
                        put(out, escape(scalar_text(x, k), T_ATTR, k))
                        put(out, b'"')
                    continue
                if kt is None:
                    kt = tags[k] = _tags(k)
                if isinstance(x, _ARRAY):
                    for e in x:
                        _push(stack, kt, e, depth + 1)
                else:
                    _push(stack, kt, x, depth + 1)
            if text is None and len(stack) == base:
                del stack[-3:]  # no content: <name/>, no end tag
                put(out, b"/>")
                continue
            put(out, b">")
            if text is not None:
                put(out, escape(scalar_text(text, "#text"), T_TEXT, "#text"))
            _reverse3(stack, base)  # children were pushed in order: pop them in order
        elif isinstance(v, _ARRAY):
            if not v:
                put(out, t[0])
                put(out, b"/>")
                continue
            put(out, t[1])
            _push(stack, t, _CLOSE, 0)
            for i in range(len(v) - 1, -1, -1):
                _push(stack, _ITEM, v[i], depth + 1)
        else:
            put(out, t[1])
            put(out, escape(scalar_text(v, t[3]), T_TEXT, t[3]))
            put(out, t[2])
    return written(out)


@micropython.native
def _push(lst, a, b, c):
    """Append a, b and c to lst (a tuple for extend() would be allocated per call)."""
    lst.append(a)
    lst.append(b)
    lst.append(c)


@micropython.native
def _reverse3(stack, base):
    """Reverse the order of the triples in stack[base:], in place."""
    i = base
    j = len(stack) - 3
    while i < j:
        for k in range(3):
            stack[i + k], stack[j + k] = stack[j + k], stack[i + k]
        i += 3
        j -= 3


def loads(data, typed=False, list_keys=(), item="item", max_depth=32, max_elements=1024):
    """(root element name, JSON value) for an XML document (see the module docstring)."""
    b = data.encode() if isinstance(data, str) else bytes(data)
    n = len(b)
    i = 3 if b.startswith(b"\xef\xbb\xbf") else 0
    if b.startswith(b"<?xml", i) and i + 5 < n and T_WS[b[i + 5]] or b.startswith(b"<?xml?", i):
        k = b.find(b"?>", i)
        if k < 0:
            raise ConvError("unterminated XML declaration", i)
        check_decl(b, i, k)
        i = k + 2
    stack = []
    pool = []  # frames of closed elements, reused: fewer short-lived blocks between the results
    names = {}  # hash of a name's bytes -> (start, end, str): a repeated name is one str
    root = None
    seen_doctype = False
    count = 0
    while True:
        lt = b.find(b"<", i)
        if lt < 0:
            lt = n
        if lt > i:  # text
            if stack:
                if b.find(b"]]>", i, lt) >= 0:
                    raise ConvError("']]>' in text", b.find(b"]]>", i, lt))
                add_text(stack[-1], unescape(b, i, lt, T_TEXT, False))
            elif span_in(b, i, lt, T_WS) < lt:
                where = "junk after the root element" if root is not None else "text before the root element"
                raise ConvError(where, span_in(b, i, lt, T_WS))
        if lt >= n:
            break
        i = lt + 1
        c = b[i] if i < n else 0
        if c == 47:  # '/': end tag
            if not stack:
                raise ConvError("end tag without start tag", lt)
            f = stack[-1]
            q = span_in(b, i + 1, n, T_NAME)
            ns, ne = f[1], f[2]
            if q - i - 1 != ne - ns or not mem_eq(b, i + 1, b, ns, ne - ns):
                raise ConvError("mismatched end tag", lt)
            i = span_in(b, q, n, T_WS)
            if i >= n or b[i] != 62:
                raise ConvError("bad end tag", lt)
            i += 1
            stack.pop()
            v = close(f, typed, item)
            if stack:
                add_child(stack[-1], f[0], v, list_keys)
            else:
                root = (f[0], v)
            pool.append(f)
        elif c == 63:  # '?': a processing instruction
            k = b.find(b"?>", i + 1)
            if k < 0:
                raise ConvError("unterminated processing instruction", lt)
            if b[i + 1 : span_in(b, i + 1, k, T_NAME)].lower() == b"xml":
                raise ConvError("XML declaration not at the start", lt)
            i = k + 2
        elif c == 33 and b.startswith(b"--", i + 1):  # '!--': a comment
            k = b.find(b"--", i + 3)
            if k < 0 or not b.startswith(b"-->", k):
                raise ConvError("unterminated comment" if k < 0 else "'--' in a comment", lt)
            i = k + 3
        elif c == 33 and b.startswith(b"[CDATA[", i + 1):
            k = b.find(b"]]>", i + 8)
            if k < 0 or not stack:
                raise ConvError("unterminated CDATA" if stack else "CDATA outside the root element", lt)
            add_text(stack[-1], unescape(b, i + 8, k, T_CDATA, False))
            i = k + 3
        elif c == 33 and b.startswith(b"DOCTYPE", i + 1):
            if seen_doctype or stack or root is not None:
                raise ConvError("misplaced DOCTYPE", lt)
            seen_doctype = True
            i = doctype_end(b, lt, n)
        elif c == 33:
            raise ConvError("bad markup declaration", lt)
        else:  # a start tag
            if root is not None:
                raise ConvError("junk after the root element", lt)
            count += 1
            if len(stack) >= max_depth or count > max_elements:
                raise ConvError("too deep" if count <= max_elements else "too many elements", lt)
            q = span_in(b, i, n, T_NAME)
            f = frame(pool, shared_name(b, i, q, names, False), i, q)
            p = q
            while True:
                s = span_in(b, p, n, T_WS)
                if s >= n:
                    raise ConvError("unclosed start tag", lt)
                c = b[s]
                if c == 62 or (c == 47 and b.startswith(b"/>", s)):
                    i = s + 1 if c == 62 else s + 2
                    break
                if s == p:
                    raise ConvError("bad start tag", s)
                e = span_in(b, s, n, T_NAME)
                a = shared_name(b, s, e, names, True)
                e = span_in(b, e, n, T_WS)
                if e >= n or b[e] != 61:  # '=', then the quoted value
                    raise ConvError("bad attribute", s)
                e = span_in(b, e + 1, n, T_WS)
                if e >= n or b[e] not in (34, 39):
                    raise ConvError("bad attribute", s)
                p = b.find(b'"' if b[e] == 34 else b"'", e + 1)
                if p < 0:
                    raise ConvError("unterminated attribute value", e)
                v = unescape(b, e + 1, p, T_ATTR, True)
                add_attr(f, a, v, typed, s)
                p += 1
            if stack:
                child_starts(stack[-1])
            if c == 62:
                stack.append(f)
            else:
                v = close(f, typed, item)
                if stack:
                    add_child(stack[-1], f[0], v, list_keys)
                else:
                    root = (f[0], v)
                pool.append(f)
    if stack:
        raise ConvError("unclosed element", stack[-1][1] - 1)
    if root is None:
        raise ConvError("no root element", n)
    return root
