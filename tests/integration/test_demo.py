"""The README's first command ends in the demo (tests/demo/demo.py): it must play its
conversation to the end, in the order the README shows, and exit 0, on the build under
test (ctest's memcheck runs it once more under valgrind), so that no change breaks the
first thing a new user types."""
import subprocess
import sys

from conftest import BIN, SOURCE_DIR

# What the README's abridged output shows, in that order.
EXPECTED = [
    "--- the customer talks to the bot",
    "  customer    Hello!",
    "  bot         We are open Monday to Friday",
    "--- the bot asks for a human: handoffd routes the conversation to the agent desk",
    "  desk        new conversation chat-1 for queue '",
    "customer Dana (u-dana), language en-US, last topic 'Order status', tier gold",
    "transcript, 7 lines:",
    "--- an agent takes over",
    "  bot sees    handoff.status accepted",
    "--- the agent finishes and hands the conversation back to the bot",
    "  bot sees    handoff.status completed",
    "  bot         You said: One more thing: are you open on Saturday?",
    "  handoffd stopped with exit code 0; 0 error lines in its log",
]


def test_demo_plays_to_the_end_and_exits_0():
    r = subprocess.run([sys.executable, str(SOURCE_DIR / "tests" / "demo" / "demo.py"), BIN],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    at = 0
    for line in EXPECTED:
        found = r.stdout.find(line, at)
        assert found >= 0, f"{line!r} missing (or out of order) in:\n{r.stdout}"
        at = found + len(line)
