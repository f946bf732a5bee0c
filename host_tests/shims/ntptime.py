"""ntptime for the board tests: settime() fails `fails` times (OSError ETIMEDOUT), then succeeds.

Read: `calls` (settime() calls), `hosts` (the `host` each call used). It never sets a clock.
"""

host = "pool.ntp.org"
timeout = 1
fails = 0
calls = 0
hosts = []


def reset():
    global host, fails, calls
    host = "pool.ntp.org"
    fails = 0
    calls = 0
    del hosts[:]


def settime():
    global fails, calls
    calls += 1
    hosts.append(host)
    if fails > 0:
        fails -= 1
        raise OSError(110)  # ETIMEDOUT: no answer within `timeout`


def time():
    return 0
