"""Builtins the MicroPython compiler provides, for type checking firmware/ (found before the
board stubs' own __builtins__.pyi, which it replaces).

The board stubs declare the viper pointer types ptr8/ptr16/ptr32 as int subclasses, so a call
from ordinary code that passes a bytearray, bytes, memoryview or array to a viper kernel is
reported as an error, although the viper calling convention accepts any buffer there. Here
they are Any: the kernels themselves are checked against their pure-Python twins by tests.
"""

from typing import Any

from typing_extensions import TypeAlias

from _mpy_shed._mpy_builtins import const as const
from _mpy_shed._mpy_builtins import ptr as ptr
from _mpy_shed._mpy_builtins import uint as uint

ptr8: TypeAlias = Any
ptr16: TypeAlias = Any
ptr32: TypeAlias = Any
