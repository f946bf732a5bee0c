"""The virtual board: the firmware on the MicroPython unix port, with no Wi-Fi to bring up.

It offers the same interface as boards/esp32 and boards/rp2040 (NAME, safe_mode, setup,
feed_watchdog, clock_synced), so one main.py runs everywhere. The host's own network stack stands
in for the board's and its clock is set, so it counts as synced; the config's `board` section
(Wi-Fi, access point, NTP, watchdog) is ignored here. It imports nothing at boot: the gateway's
heap budget on this port leaves no room for code it does not need.
"""

NAME = "unix"
SAFEMODE = "safemode"  # the flag file, in the working directory
clock_synced = True  # the host keeps its own clock


def safe_mode():
    """True when the file safemode exists: main.py then does not start the gateway."""
    import os

    try:
        os.stat(SAFEMODE)
    except OSError:
        return False
    print(
        "board: safe mode (file " + SAFEMODE + "): the gateway does not start; to leave: remove the file, start again"
    )
    return True


def setup(config):
    """Nothing to connect on the host; report where the gateway will listen."""
    lc = config.listen
    print("board: unix (virtual), gateway on " + lc.host + ":" + str(lc.port))


def feed_watchdog():
    """No hardware watchdog on the host."""
