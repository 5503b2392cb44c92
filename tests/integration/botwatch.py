"""What the emulated bot received, for the end-to-end hub tests: a mixin for their Env
classes, which provide `workdir` (handoffd's state.db is there), `emu`, `daemon` and
`front` (the hub module's short name, the prefix of handoffd's conversation keys).
"""
import sqlite3
import time


class BotWatch:
    front = None

    def dl(self, conv):
        """The Direct Line conversation handoffd opened for hub conversation CONV, or None."""
        db = sqlite3.connect(self.workdir / "state.db")
        try:
            row = db.execute("SELECT dl_conversation_id FROM conversations WHERE key = ?",
                             (f"{self.front}:{conv}",)).fetchone()
        finally:
            db.close()
        return row[0] if row else None

    def bot_received(self, conv):
        dl = self.dl(conv)
        assert dl, f"no Direct Line conversation for {conv} yet: wait for a reply first"
        return self.emu.ctl.received(dl)

    def bot_heard(self, conv):
        return [a.get("text") or (a.get("value") or {}).get("state") or a["type"] for a in self.bot_received(conv)]

    def wait_bot(self, conv, predicate, timeout=20, what="the bot to receive it"):
        """Waits (on the emulator, no polling) until PREDICATE(texts and states the bot got)."""
        deadline = time.monotonic() + timeout
        while True:
            heard = self.bot_heard(conv)
            if predicate(heard):
                return heard
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; the bot got {heard}; handoffd said:\n"
                                     + "\n".join(self.daemon.lines[-30:]))
            try:
                self.emu.ctl.wait_count(self.dl(conv), "received", len(heard) + 1, timeout=left)
            except TimeoutError:
                pass

    def statuses(self, conv):
        return [a["value"]["state"] for a in self.bot_received(conv) if a.get("name") == "handoff.status"]

    def wait_statuses(self, conv, states):
        self.wait_bot(conv, lambda _: self.statuses(conv) == states, what=f"handoff.status {states}")
