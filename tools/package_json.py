"""Write package.json, the mip manifest of the firmware package (CPython tool).

    python tools/package_json.py [--check]

`mpremote mip install ./package.json` (from a checkout) or `mpremote mip install
github:OWNER/REPO` copies every module of firmware/apigw/ to the board's lib/apigw/ as source;
main.py, the board module and the config are the user's to copy (README, "Flashing a board").
For a board, .mpy files (`make deploy`) or frozen firmware save the heap that compiling the
source there takes. --check exits 1 when package.json is not what this tool would write (a test
runs it: a module added or removed must be listed).
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "firmware"))


def manifest():
    from apigw import __version__

    src = os.path.join(ROOT, "firmware", "apigw")
    names = sorted(n for n in os.listdir(src) if n.endswith(".py"))
    return {
        "urls": [["apigw/" + n, "firmware/apigw/" + n] for n in names],
        "deps": [],
        "version": __version__,
    }


def text():
    return json.dumps(manifest(), indent=1) + "\n"


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    path = os.path.join(ROOT, "package.json")
    want = text()
    if "--check" in args:
        try:
            with open(path) as f:
                have = f.read()
        except OSError:
            have = ""
        if have != want:
            print("package.json is out of date: run python tools/package_json.py", file=sys.stderr)
            return 1
        return 0
    with open(path, "w") as f:
        f.write(want)
    print("written: package.json (%d modules)" % len(manifest()["urls"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
