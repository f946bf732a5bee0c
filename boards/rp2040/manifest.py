# Freeze apigw into a MicroPython firmware for this board: its bytecode then runs from flash and
# its code takes no heap (.mpy files on the filesystem are loaded into RAM).
# In a MicroPython checkout (ports/rp2), with this repository at APIGW:
#     make BOARD=RPI_PICO_W FROZEN_MANIFEST=APIGW/boards/rp2040/manifest.py
# then flash the firmware it builds as in the README, and copy main.py, gateway.json and
# secrets.json (nothing else: the package, board.py and wlan.py are frozen in).
# Relative paths start at this file's folder.
include("$(PORT_DIR)/boards/manifest.py")  # type: ignore  # noqa: F821  (the port's own modules)
# The Pico W's own manifest adds this; a FROZEN_MANIFEST replaces it, so it is named here: ntptime
# (the clock) comes with it.
require("bundle-networking")  # type: ignore  # noqa: F821
package("apigw", base_path="../../firmware")  # type: ignore  # noqa: F821
module("board.py")  # type: ignore  # noqa: F821
module("wlan.py", base_path="../common")  # type: ignore  # noqa: F821
