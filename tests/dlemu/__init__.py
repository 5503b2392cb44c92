"""Direct Line 3.0 emulator for handoffd's tests, benchmarks and demo (see README.md).

In-process use (pytest fixtures, benchmarks):

    from tests.dlemu import Emulator
    async with Emulator(token_ttl=6) as emu:
        emu.info["http_base"]

From another process: tests.dlemu.control.spawn() and Control.
"""
from .server import Emulator

__all__ = ["Emulator"]
