"""How xmlconv.loads turns elements into JSON values: the XML -> JSON half of the mapping.

Owns the frame of an open element (name, attributes, children, text segments), the value of a
closed element (string, object, list for <item> children, null for a lone nil="true"), repeated
names as lists, list_keys, and one shared str per repeated name. Must not scan bytes beyond a
name (xmlconv does) nor do I/O. The rules themselves are documented in xmlconv's docstring.

Frames are reused from a pool and names are shared, so a long document leaves few short-lived
blocks between its results: loads' peak heap stays near json.loads' for the same value.
"""

from .compat import const, micropython
from .convtext import ConvError, typed_value
from .native import hash_span, mem_eq
from .xmltext import name_at

# Frame of an open element: [name, name start, name end, attrs, kids, lists, texts, pieces, has kids]
_ATTRS = const(3)
_KIDS = const(4)
_LISTS = const(5)
_TEXTS = const(6)  # kept segments of mixed content
_CUR = const(7)  # the current segment: None, a str, or a list of str once it has two pieces
_HAS = const(8)


@micropython.native
def add_text(f, s):
    """Add the text piece s to the current segment of frame f."""
    cur = f[_CUR]
    if cur is None:
        f[_CUR] = s
    elif isinstance(cur, str):
        f[_CUR] = [cur, s]
    else:
        cur.append(s)


def _joined(cur):
    """The text of a segment: a str, or a list of them."""
    return cur if isinstance(cur, str) else "".join(cur)


@micropython.native
def _segment(f):
    """Close the text segment of frame f: keep it unless it is whitespace-only."""
    s = _joined(f[_CUR])
    f[_CUR] = None
    if s.strip(" \t\r\n"):
        if f[_TEXTS] is None:
            f[_TEXTS] = []
        f[_TEXTS].append(s)


@micropython.native
def close(f, typed, item):
    """The JSON value of a closed element."""
    attrs, kids = f[_ATTRS], f[_KIDS]
    text = None
    if f[_HAS]:
        if f[_CUR]:
            _segment(f)
        if f[_TEXTS]:
            text = "".join(f[_TEXTS])
    elif f[_CUR]:
        text = _joined(f[_CUR])
    if kids is None:
        if attrs is None:
            text = text or ""
            return typed_value(text) if typed else text
        if not text and typed and len(attrs) == 1 and attrs.get("@nil") is True:
            return None
    elif attrs is None and not text and item is not None and len(kids) == 1 and item in kids:
        v = kids[item]
        return v if f[_LISTS] and item in f[_LISTS] else [v]
    obj = kids if attrs is None else attrs  # the children's dict itself when there are no attributes
    if obj is None:
        obj = {}
    elif attrs is not None and kids:
        for k in kids:
            obj[k] = kids[k]
    if text:
        obj["#text"] = typed_value(text) if typed else text
    return obj


@micropython.native
def add_attr(f, key, v, typed, offset):
    """Set attribute key ("@name") of frame f to the text v; ConvError at offset if it is set."""
    attrs = f[_ATTRS]
    if attrs is None:
        attrs = f[_ATTRS] = {}
    elif key in attrs:
        raise ConvError("duplicate attribute", offset)
    attrs[key] = typed_value(v) if typed else v


@micropython.native
def child_starts(f):
    """An element starts inside the one of frame f: the text before it is a segment of its own."""
    f[_HAS] = True
    if f[_CUR]:
        _segment(f)


@micropython.native
def add_child(f, name, v, list_keys):
    """Add child value v named name to frame f (a repeated name or one in list_keys: a list)."""
    kids, lists = f[_KIDS], f[_LISTS]
    if kids is None:
        kids = f[_KIDS] = {}
    if lists is not None and name in lists:
        lists[name].append(v)
        return
    if name in kids:
        v = [kids[name], v]
    elif name in list_keys:
        v = [v]
    else:
        kids[name] = v
        return
    kids[name] = v
    if lists is None:
        lists = f[_LISTS] = {}
    lists[name] = v


_NAMES = const(64)  # distinct names loads shares; beyond that each occurrence is its own str


@micropython.native
def frame(pool, name, s, e):
    """A frame for an element named name (b[s:e]), from the pool when it has one."""
    f = pool.pop() if pool else [None, 0, 0, None, None, None, None, None, False]
    f[0] = name
    f[1] = s
    f[2] = e
    for k in range(_ATTRS, _HAS):
        f[k] = None
    f[_HAS] = False
    return f


@micropython.native
def shared_name(b, s, e, names, attr):
    """The name b[s:e] as a str ("@name" for an attribute), one str per distinct name."""
    h = hash_span(b, s, e)
    if attr:
        h = -1 - h
    c = names.get(h)
    if c is not None and c[1] - c[0] == e - s and mem_eq(b, s, b, c[0], e - s):
        return c[2]
    name = name_at(b, s, e)
    if attr:
        name = "@" + name
    if c is None and len(names) < _NAMES:
        names[h] = (s, e, name)
    return name
