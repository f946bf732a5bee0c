"""Scripted stand-ins for the board-only modules (machine, network, ntptime, rp2), for testing the
board bring-up (boards/) on the host and on the unix port.

They are imported as `shims.machine` and so on, then installed by the test under the real name
(`sys.modules["machine"] = ...`) before the board code is imported, and taken out again after: on
the unix port a file named machine.py would lose to the built-in module, an entry in sys.modules
does not. Each shim keeps its state in module globals that a test scripts and reads; `reset()`
puts them back to the defaults.
"""
