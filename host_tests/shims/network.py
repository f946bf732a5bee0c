"""network for the board tests: WLAN station and access point interfaces, scripted.

Script: `script` lists what each station connect() call does, in order: True connects (after
`polls` calls of isconnected()), a STAT_* code fails with that status; once the list is used up
every attempt fails with STAT_NO_AP_FOUND. `raise_on_connect = True` makes connect() raise OSError.
Read: `WLAN(STA_IF)` / `WLAN(AP_IF)` give the one object per interface (as the ports do), with
`connects` (the number of connect() calls), `configured` (the keywords config() was given),
`active_state`, `disconnects`.
The ESP32 port's AUTH_WPA2_PSK is here; a test deletes it to play the rp2 port.
"""

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = -3
STAT_NO_AP_FOUND = -2
STAT_CONNECT_FAIL = -1
STAT_GOT_IP = 3
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

MAC = b"\x24\x0a\xc4\x12\xab\xcd"
script = []
polls = 3
raise_on_connect = False
_ifaces = {}


def reset():
    global polls, raise_on_connect, AUTH_WPA2_PSK
    del script[:]
    polls = 3
    raise_on_connect = False
    AUTH_WPA2_PSK = 3
    _ifaces.clear()


class _Wlan:
    def __init__(self, interface):
        self.interface = interface
        self.active_state = False
        self.connected = False
        self.state = STAT_IDLE
        self.connects = 0
        self.disconnects = 0
        self.configured = {}
        self._left = -1  # isconnected() calls until connected; -1: not connecting
        self._key = None  # what the station was given, as a port keeps it (tests check it arrived)

    def active(self, on=None):
        if on is None:
            return self.active_state
        self.active_state = bool(on)
        if not on:
            self.connected = False

    def connect(self, ssid, key=None):
        if raise_on_connect:
            raise OSError(-1)
        self.connects += 1
        self._key = (ssid, key)
        step = script.pop(0) if script else STAT_NO_AP_FOUND
        if step is True:
            self._left = polls
            self.state = STAT_CONNECTING
        else:
            self._left = -1
            self.state = step

    def disconnect(self):
        self.disconnects += 1
        self.connected = False
        self._left = -1

    def isconnected(self):
        if self._left > 0:
            self._left -= 1
        elif self._left == 0:
            self.connected = True
            self.state = STAT_GOT_IP
            self._left = -1
        return self.connected

    def status(self):
        return self.state

    def ifconfig(self):
        if self.interface == AP_IF:
            return ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
        return ("192.168.1.23", "255.255.255.0", "192.168.1.1", "192.168.1.1")

    def config(self, *args, **kw):
        if args:
            if args[0] == "mac":
                return MAC
            return self.configured.get(args[0])
        self.configured.update(kw)


def WLAN(interface=STA_IF):
    w = _ifaces.get(interface)
    if w is None:
        w = _ifaces[interface] = _Wlan(interface)
    return w
