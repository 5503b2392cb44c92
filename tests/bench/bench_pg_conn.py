#!/usr/bin/python3
"""Group commit through runtime/net/pg_conn.c against a throwaway PostgreSQL server
(tests/integration/pg_server.py, fsync on), driven by tests/tools/pg_driver.

Prints, asserting nothing about time:
  - one turn of N inserts: wall time, rows per second, commits (expected: 1);
  - S single-insert batches one after another: the commit round trip (fsync-bound);
  - B callers in one turn (B lines read at once, one insert each): commits and wall time.

    /usr/bin/python3 tests/bench/bench_pg_conn.py build/tests/tools [N=10000] [S=300] [B=500]
"""
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from pg_server import PgServer  # noqa: E402


def main():
    tools = sys.argv[1] if len(sys.argv) > 1 else "build/tests/tools"
    n, s, b = (int(sys.argv[i]) if len(sys.argv) > i else d for i, d in ((2, 10000), (3, 300), (4, 500)))
    os.environ["HANDOFFD_TOOLS_DIR"] = tools
    import test_pg_conn  # reads HANDOFFD_TOOLS_DIR at import

    server = PgServer()
    try:
        server.psql("CREATE TABLE items (id bigserial PRIMARY KEY, tag text NOT NULL, n int NOT NULL,"
                    " xid xid8 NOT NULL DEFAULT pg_current_xact_id()); ALTER TABLE items OWNER TO handoffd")
        with tempfile.TemporaryDirectory() as tmp, \
                test_pg_conn.PgDriver(pathlib.Path(tmp), server, None, "--max-queued", str(max(n, b) + 1)) as d:
            d.wait_for(lambda e: e["ev"] == "state" and e["up"])
            before = d.stats()["batches_committed"]
            t = time.perf_counter()
            e = d.run("batch", "turn", n)
            took = time.perf_counter() - t
            assert e["ok"] == n, e
            print(f"one turn of {n} inserts: {took * 1000:.0f} ms, {n / took:.0f} rows/s, "
                  f"{d.stats()['batches_committed'] - before} commit(s)")

            lat = []
            for i in range(s):
                t = time.perf_counter()
                e = d.run("batch", f"seq{i}", 1)
                lat.append(time.perf_counter() - t)
                assert e["ok"] == 1, e
            lat.sort()
            print(f"{s} single-insert batches one after another: commit round trip "
                  f"p50 {statistics.median(lat) * 1000:.2f} ms, p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.2f} ms")

            before = d.stats()["batches_committed"]
            since = d.mark()
            t = time.perf_counter()
            d.proc.stdin.write("".join(f"batch caller{i} 1\n" for i in range(b)))
            d.proc.stdin.flush()
            for i in range(b):
                d.wait_for(lambda e, tag=f"caller{i}": e["ev"] == "batch" and e["tag"] == tag, since)
            took = time.perf_counter() - t
            print(f"{b} callers with one insert each, written at once: {took * 1000:.0f} ms, "
                  f"{d.stats()['batches_committed'] - before} commit(s)")
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
