"""pytest setup: firmware/ and host_tests/ on sys.path, as MICROPYPATH does for the unix port."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)

for _p in (os.path.join(_ROOT, "firmware"), _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)
