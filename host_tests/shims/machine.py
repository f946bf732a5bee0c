"""machine for the board tests: Pin, WDT, Timer, reset_cause with the *_RESET constants, unique_id.

Script: `levels[pin id] = 0` makes an input pin read 0 (a held button); `cause` is what
reset_cause() answers; `timer_error = True` makes Timer() fail as on a port without one.
Read: `pins[id]` (the last Pin made for an id: its `level`, `changes`), `wdts` (every WDT: its
`timeout`, `feeds`), `timers` (every Timer: its `period`, `callback`; `fire()` runs it).
"""

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

cause = PWRON_RESET
levels = {}
pins = {}
wdts = []
timers = []
timer_error = False
UID = b"\xe6\x61\x41\x04\x03\x2a\x1b\x2c"


def reset():
    global cause, timer_error
    cause = PWRON_RESET
    timer_error = False
    levels.clear()
    pins.clear()
    del wdts[:]
    del timers[:]


def reset_cause():
    return cause


def unique_id():
    return UID


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.mode = mode
        self.pull = pull
        self.level = levels.get(id, 1 if pull == Pin.PULL_UP else 0)
        self.changes = 0  # how often an output level changed
        if value is not None:
            self.level = 1 if value else 0
        pins[id] = self

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v != self.level:
            self.changes += 1
        self.level = v

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self.level)


class WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        wdts.append(self)

    def feed(self):
        self.feeds += 1


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1):
        if timer_error:
            raise ValueError("no timer")
        self.id = id
        self.period = None
        self.mode = None
        self.callback = None
        timers.append(self)

    def init(self, mode=1, period=-1, callback=None):
        self.mode = mode
        self.period = period
        self.callback = callback

    def deinit(self):
        self.callback = None

    def fire(self):
        """What the port does when the period is over."""
        if self.callback is not None:
            self.callback(self)
