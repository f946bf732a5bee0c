"""The virtual board: the firmware on the MicroPython unix port, with no Wi-Fi to bring up.

It offers the same interface as boards/esp32 and boards/rp2040 (setup, feed_watchdog, NAME), so
one main.py runs everywhere. The host's own network stack stands in for the board's.
"""

NAME = "unix"


def setup(config):
    """Nothing to connect on the host; report where the gateway will listen."""
    lc = config.listen
    print("board: unix (virtual), gateway on " + lc.host + ":" + str(lc.port))


def feed_watchdog():
    """No hardware watchdog on the host."""
