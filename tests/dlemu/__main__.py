"""`/usr/bin/python3 -m tests.dlemu`: runs the emulator's command line (emulator.py)."""
from .emulator import main

main()
