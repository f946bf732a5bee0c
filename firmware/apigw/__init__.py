"""apigw: an API gateway for MicroPython boards."""

__version__ = "0.1.0"
