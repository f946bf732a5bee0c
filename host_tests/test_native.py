"""Portable tests for firmware/apigw/native.py.

On MicroPython the kernels without suffix are viper code and each is checked against its
pure-Python twin (`*_py`) over tables of inputs; under CPython both names are the twin, so the
expected values in the tables are what is tested. The heap_lock test runs on MicroPython only.
"""

from array import array

from apigw import native
from check import requires_micropython

# (kernel, twin) pairs that take (buf, start, end) and return an int.
SPAN_KERNELS = (
    (native.hash_span, native.hash_span_py),
    (native.parse_uint, native.parse_uint_py),
    (native.parse_hex, native.parse_hex_py),
    (native.bad_head_byte, native.bad_head_byte_py),
)

SPAN_INPUTS = (
    b"",
    b"/",
    b"0",
    b"/api/v1/users/42",
    b"123456789",
    b"1073741819",
    b"1073741824",
    b"ffffff",
    b"FfFfFfF",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"bare\nlf",
    b"bare\rcr",
    b"\x00\x7f\x80\xff\t ",
    bytes(range(256)),
)


def _ref_hash(data):
    h = 5381
    for c in data:
        h = ((h * 33) ^ c) & 0xFFFFFF
    return h


def _span(kernel, data, pad=3):
    """Run kernel over data placed at an offset, with junk around it."""
    buf = bytearray(b"#" * pad + data + b"\xff" * pad)
    return kernel(buf, pad, pad + len(data))


def test_viper_is_active_on_micropython():
    requires_micropython()
    assert native.hash_span is not native.hash_span_py
    assert native.normalize_path is not native.normalize_path_py
    assert native.mem_move is not native.mem_move_py


def test_span_kernels_agree_with_twins():
    for data in SPAN_INPUTS:
        for kernel, twin in SPAN_KERNELS:
            got = _span(kernel, data)
            want = _span(twin, data)
            assert got == want, (twin.__name__, data, got, want)
            # every prefix too: catches off-by-one at the end offset
            for n in range(min(len(data), 40)):
                assert _span(kernel, data[:n]) == _span(twin, data[:n]), (twin.__name__, data[:n])


def test_hash_span_values():
    assert _span(native.hash_span, b"") == 5381
    for data in SPAN_INPUTS:
        h = _span(native.hash_span, data)
        assert h == _ref_hash(data), data
        assert 0 <= h < (1 << 24)


def test_hash_span_on_memoryview_slice():
    buf = bytearray(b"xx/users/42yy")
    mv = memoryview(buf)
    assert native.hash_span(mv, 2, 11) == _ref_hash(b"/users/42")


def _boundaries(kernel, path, cap):
    buf = bytearray(b"GET " + path + b" HTTP/1.1")
    start = 4
    hashes = array("I", [0] * (cap + 1))
    ends = array("H", [0] * (cap + 1))
    k = kernel(buf, start, start + len(path), hashes, ends)
    return k, list(hashes[:k]), [e - start for e in ends[:k]]


BOUNDARY_CASES = (
    # path, cap, expected prefix ends (relative to the path start)
    (b"", 32, [0]),
    (b"/", 32, [0, 1]),
    (b"/a", 32, [0, 2]),
    (b"/a/b/c", 32, [0, 2, 4, 6]),
    (b"/a/b/c/", 32, [0, 2, 4, 6, 7]),
    (b"/api/v1/users/", 32, [0, 4, 7, 13, 14]),
    (b"/x/y/z/w", 2, [0, 2, 8]),  # deeper boundaries dropped, whole path kept last
)


def test_hash_boundaries_cases():
    for path, cap, want_ends in BOUNDARY_CASES:
        for kernel in (native.hash_boundaries, native.hash_boundaries_py):
            k, hashes, ends = _boundaries(kernel, path, cap)
            assert k == len(want_ends), (path, k)
            assert ends == want_ends, (path, ends)
            for i in range(k):
                assert hashes[i] == _ref_hash(path[: ends[i]]), (path, i)


def test_hash_boundaries_many_segments():
    path = b"".join(b"/s" + str(i).encode() for i in range(40))
    for cap in (1, 2, 8, 32):
        k, hashes, ends = _boundaries(native.hash_boundaries, path, cap)
        k2, hashes2, ends2 = _boundaries(native.hash_boundaries_py, path, cap)
        assert (k, hashes, ends) == (k2, hashes2, ends2), cap
        assert k == cap + 1
        assert ends[-1] == len(path)
        assert hashes[-1] == _ref_hash(path)
        assert ends[0] == 0 and hashes[0] == 5381


EQ_CASES = (
    # a, b, expected mem_eq, expected mem_eq_lower
    (b"", b"", True, True),
    (b"host", b"host", True, True),
    (b"Host", b"host", False, True),
    (b"CONTENT-LENGTH", b"content-length", False, True),
    (b"content-lengtH", b"content-lengtx", False, False),
    (b"@[`{", b"@[`{", True, True),
    (b"@", b"`", False, False),  # '@' (64) is not 'A' - 1 lowered
    (b"[", b"{", False, False),  # '[' (91) is not 'Z' + 1 lowered
    (b"\xc3\x84", b"\xc3\xa4", False, False),  # no non-ASCII folding
)


def test_mem_eq_and_lower():
    for a, b, eq, eq_lower in EQ_CASES:
        pa = bytearray(b"..." + a)
        pb = bytearray(b + b"!!")
        n = len(a)
        for k, twin, want in (
            (native.mem_eq, native.mem_eq_py, eq),
            (native.mem_eq_lower, native.mem_eq_lower_py, eq_lower),
        ):
            assert bool(k(pa, 3, pb, 0, n)) == want, (twin.__name__, a, b)
            assert bool(twin(pa, 3, pb, 0, n)) == want, (twin.__name__, a, b)
    # only the first n bytes count
    assert native.mem_eq(bytearray(b"abcX"), 0, bytearray(b"abcY"), 0, 3)
    assert not native.mem_eq(bytearray(b"abcX"), 0, bytearray(b"abcY"), 0, 4)


MOVE_CASES = (
    # dst offset, src offset, n (all within one 32-byte buffer)
    (0, 0, 10),
    (0, 5, 10),  # backward, overlapping
    (5, 0, 10),  # forward, overlapping
    (1, 0, 31),
    (0, 1, 31),
    (10, 20, 5),
    (20, 10, 5),
    (7, 3, 0),
)


def test_mem_move_overlap_both_directions():
    for do, so, n in MOVE_CASES:
        for kernel in (native.mem_move, native.mem_move_py):
            buf = bytearray(range(32))
            want = bytearray(buf)
            want[do : do + n] = bytes(buf[so : so + n])
            kernel(buf, do, buf, so, n)
            assert buf == want, (kernel, do, so, n)


def test_mem_move_between_buffers():
    for kernel in (native.mem_move, native.mem_move_py):
        src = bytearray(b"hello world")
        dst = bytearray(16)
        kernel(dst, 2, src, 6, 5)
        assert dst == bytearray(b"\x00\x00world" + bytes(9))
        assert src == bytearray(b"hello world")


UINT_CASES = (
    (b"", -1),
    (b"0", 0),
    (b"007", 7),
    (b"42", 42),
    (b"+1", -1),
    (b"-1", -1),
    (b" 1", -1),
    (b"1 ", -1),
    (b"12a", -1),
    (b"1.5", -1),
    (b"107374181", 107374181),
    (b"1073741819", 1073741819),  # largest value the overflow guard lets through
    (b"1073741824", -1),  # 2**30: would be a big int on a board
    (b"2147483648", -1),
    (b"99999999999999999999", -1),
    (b"00000000000000000001", 1),
)


def test_parse_uint_edges():
    for data, want in UINT_CASES:
        assert _span(native.parse_uint, data) == want, data
        assert _span(native.parse_uint_py, data) == want, data


HEX_CASES = (
    (b"", -1),
    (b"0", 0),
    (b"a", 10),
    (b"F", 15),
    (b"ff", 255),
    (b"1A2b", 0x1A2B),
    (b"fffffff", 0xFFFFFFF),  # 7 digits: the most accepted, below 2**28
    (b"10000000", -1),  # 8 digits
    (b"0000000", 0),
    (b"g", -1),
    (b"1;ext", -1),
    (b" 1", -1),
    (b"0x1", -1),
    (b"@", -1),
    (b"`", -1),
    (b"G", -1),
)


def test_parse_hex_edges():
    for data, want in HEX_CASES:
        assert _span(native.parse_hex, data) == want, data
        assert _span(native.parse_hex_py, data) == want, data


HEAD_CASES = (
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", -1),
    (b"X: \t\x80\xff~\r\n", -1),
    (b"GET /\n", 5),  # bare LF
    (b"GET /\r", 5),  # CR at the end of the range
    (b"a\rb", 1),  # bare CR
    (b"a\x00b", 1),
    (b"a\x7fb", 1),
    (b"a\x1bb", 1),
    (b"\r\n\r\n\x01", 4),
)


def test_bad_head_byte():
    for data, want in HEAD_CASES:
        if want >= 0:
            want += 3  # _span puts data at offset 3; the kernel returns a buffer index
        assert _span(native.bad_head_byte, data) == want, data
        assert _span(native.bad_head_byte_py, data) == want, data


NORMALIZE_CASES = (
    # RFC 3986 5.2.4 / 5.4 examples, as absolute paths
    (b"/a/b/c/./../../g", b"/a/g"),
    (b"/mid/content=5/../6", b"/mid/6"),
    (b"/b/c/g", b"/b/c/g"),
    (b"/b/c/./g", b"/b/c/g"),
    (b"/b/c/g/", b"/b/c/g/"),
    (b"/b/c/.", b"/b/c/"),
    (b"/b/c/./", b"/b/c/"),
    (b"/b/c/..", b"/b/"),
    (b"/b/c/../", b"/b/"),
    (b"/b/c/../g", b"/b/g"),
    (b"/b/c/../..", b"/"),
    (b"/b/c/../../g", b"/g"),
    (b"/b/c/../../../g", b"/g"),  # above the root stays at the root
    (b"/b/c/../../../../g", b"/g"),
    (b"/./g", b"/g"),
    (b"/../g", b"/g"),
    (b"/b/c/g.", b"/b/c/g."),
    (b"/b/c/.g", b"/b/c/.g"),
    (b"/b/c/g..", b"/b/c/g.."),
    (b"/b/c/..g", b"/b/c/..g"),
    (b"/b/c/./../g", b"/b/g"),
    (b"/b/c/./g/.", b"/b/c/g/"),
    (b"/b/c/g/./h", b"/b/c/g/h"),
    (b"/b/c/g/../h", b"/b/c/h"),
    (b"/b/c/g;x=1/./y", b"/b/c/g;x=1/y"),
    (b"/b/c/g;x=1/../y", b"/b/c/y"),
    (b"/public/../admin", b"/admin"),
    (b"/public/./../admin/", b"/admin/"),
    # roots and slashes
    (b"/", b"/"),
    (b"/.", b"/"),
    (b"/..", b"/"),
    (b"//", b"/"),
    (b"///a//b///", b"/a/b/"),
    (b"/a/./../.././b", b"/b"),
    # percent-encoding: unreserved decoded, others upper-cased, %2F kept
    (b"/%7Euser", b"/~user"),
    (b"/%7euser", b"/~user"),
    (b"/%41%62%2D%5f%2e", b"/Ab-_."),
    (b"/a%2fb", b"/a%2Fb"),
    (b"/a%2Fb/../c", b"/c"),  # %2F is not a separator
    (b"/a%20b", b"/a%20b"),
    (b"/%e2%82%ac", b"/%E2%82%AC"),
    (b"/%3f%23", b"/%3F%23"),
    (b"/%2e%2e/admin", b"/admin"),  # encoded dot segments are dot segments
    (b"/x/%2E/y", b"/x/y"),
    (b"/x/.%2e/y", b"/y"),
    # invalid
    (b"", None),
    (b"a/b", None),
    (b"/%", None),
    (b"/%4", None),
    (b"/%zz", None),
    (b"/%g0", None),
    (b"/a b", None),
    (b"/a\x00", None),
    (b"/a\tb", None),
    (b"/\x7f", None),
    (b"/\x80", None),
    (b"/\xff", None),
    (b"/a#b", None),
)


def _normalize(kernel, path):
    """Normalize path placed at offset 5 in a buffer with trailing bytes; check those stay."""
    tail = b"?q=1 HTTP/1.1"
    buf = bytearray(b"GET  " + path + tail)
    end = 5 + len(path)
    e = kernel(buf, 5, end)
    assert bytes(buf[end:]) == tail, (path, bytes(buf))  # never writes past the path
    if e < 0:
        assert e == -1
        return None
    assert 5 < e <= end
    return bytes(buf[5:e])


def test_normalize_path_cases():
    for path, want in NORMALIZE_CASES:
        got = _normalize(native.normalize_path, path)
        assert got == want, (path, got, want)
        assert _normalize(native.normalize_path_py, path) == want, path


def test_normalize_path_is_idempotent():
    for _path, want in NORMALIZE_CASES:
        if want is not None:
            assert _normalize(native.normalize_path, want) == want, want


def test_normalize_path_agrees_on_generated_paths():
    parts = (b"a", b".", b"..", b"", b"%2e", b"%2F", b"%7e", b"b%41", b"...")
    n = len(parts)
    for i in range(n):
        for j in range(n):
            for k in range(n):
                path = b"/" + parts[i] + b"/" + parts[j] + b"/" + parts[k]
                got = _normalize(native.normalize_path, path)
                assert got == _normalize(native.normalize_path_py, path), path
                assert got is not None and b"/../" not in got and b"/./" not in got, path


def _kernel_pass(path, num, other, low, move, hashes, ends, out):
    # Module-level function with plain arguments: calling a closure that captures more than a
    # few variables allocates its argument array on MicroPython, which would hide the result.
    out[0] = native.hash_span(path, 4, 31)
    out[1] = native.hash_boundaries(path, 4, 17, hashes, ends)
    out[2] = native.mem_eq(other, 0, low, 0, 13)
    out[3] = native.mem_eq_lower(other, 0, low, 0, 13)
    native.mem_move(move, 3, path, 0, 40)
    native.mem_move(move, 0, move, 3, 40)
    out[4] = native.parse_uint(num, 0, 7)
    out[5] = native.parse_hex(num, 8, 10)
    out[6] = native.bad_head_byte(path, 0, len(path))
    out[7] = native.normalize_path(path, 4, 31)
    out[8] = native.hash_span_py(low, 0, 13)


def test_kernels_allocate_nothing():
    requires_micropython()
    import micropython  # type: ignore

    path = bytearray(b"GET /api/v1/./users/%7e42/../43 HTTP/1.1\r\nHost: x\r\n\r\n")
    num = bytearray(b"1234567 ff")
    other = bytearray(b"/API/V1/USERS")
    low = bytearray(b"/api/v1/users")
    move = bytearray(64)
    hashes = array("I", bytes(4 * 33))
    ends = array("H", bytes(2 * 33))
    head = bytes(path[:40])
    out = [0, 0, 0, 0, 0, 0, 0, 0, 0]  # pre-created: storing small ints allocates nothing

    micropython.heap_lock()
    try:
        _kernel_pass(path, num, other, low, move, hashes, ends, out)
    finally:
        micropython.heap_unlock()
    assert out[0] == _ref_hash(b"/api/v1/./users/%7e42/../43")
    assert out[1] == 5  # root, /api, /api/v1, /api/v1/., /api/v1/./use
    assert not out[2] and out[3]
    assert out[4] == 1234567 and out[5] == 255
    assert out[6] == -1
    assert bytes(path[4 : out[7]]) == b"/api/v1/users/43"
    assert out[8] == _ref_hash(b"/api/v1/users")
    assert bytes(move[:40]) == head


def test_xor_into_matches_its_twin():
    for n in (0, 1, 31, 32):
        a = bytearray(range(40))
        b = bytes((i * 7 + 1) & 255 for i in range(40))  # no zero byte: every XOR changes something
        want = bytearray(a)
        native.xor_into_py(want, b, n)
        native.xor_into(a, b, n)
        assert a == want and (n == 0 or a[:n] != bytearray(range(n)))
