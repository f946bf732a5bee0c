"""Small files on the board's flash, written so that a power cut never leaves half a file.

Owns: atomic_write (write a temporary file, then rename it over the old one) and read_json. Must
not know what the files hold. Allocates; never on the request path.
"""

import json
import os


def atomic_write(path, data):
    """Replace the file at path with data (bytes or str): the old content or the new one survives
    a reset at any instant, never a mix."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    try:
        os.rename(tmp, path)
    except OSError:  # some filesystems will not rename over an existing file
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


def read_json(path):
    """The JSON document at path, or None when there is no such file. Raises ValueError (bad
    JSON) and OSError (unreadable) otherwise."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        return json.loads(f.read())
    finally:
        f.close()


def write_json(path, value):
    atomic_write(path, json.dumps(value))
