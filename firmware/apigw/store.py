"""Small files on the board's flash, written so that a power cut never leaves half a file.

Owns: atomic_write (write a temporary file, then rename it over the old one, optionally keeping
the old one as a previous copy), read_json and read_json_kept (the file, or its previous copy when
the file is missing or damaged). Must not know what the files hold. Allocates; never on the
request path.
"""

import json
import os


def _rename_over(src, dst):
    try:
        os.rename(src, dst)
    except OSError:  # some filesystems will not rename over an existing file
        try:
            os.remove(dst)
        except OSError:
            pass
        os.rename(src, dst)


def atomic_write(path, data, keep=None):
    """Replace the file at path with data (bytes or str): the old content or the new one survives
    a reset at any instant, never a mix. keep: a path that receives the old file (renamed, not
    copied); between the two renames path is missing for an instant, and a reader then takes keep
    (read_json_kept), which holds the old content."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if keep is not None:
        try:
            os.stat(path)
        except OSError:
            keep = None  # nothing to keep yet
    if keep is not None:
        _rename_over(path, keep)
        os.rename(tmp, path)  # path is gone: a plain rename
    else:
        _rename_over(tmp, path)


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


def read_json_kept(path, keep):
    """The JSON document at path, or at keep when path is missing or not valid JSON (a write cut
    short between atomic_write's renames, or a damaged file); None when neither holds one."""
    try:
        doc = read_json(path)
    except (ValueError, OSError):
        doc = None
    if doc is None:
        try:
            doc = read_json(keep)
        except (ValueError, OSError):
            doc = None
    return doc


def write_json(path, value, keep=None):
    atomic_write(path, json.dumps(value), keep)
