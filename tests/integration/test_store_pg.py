"""The store's unit tests (unit/test_store.c) against a real PostgreSQL server: the same
program that checks the SQLite backend, pointed at a throwaway database through
HANDOFFD_TEST_PG_URL, so both backends answer the same questions the same way."""
import os
import subprocess

from pg_server import pg_server  # noqa: F401 - the fixture

UNIT_DIR = os.environ.get("HANDOFFD_UNIT_DIR", "build/tests")


def test_store_unit_tests_pass_against_postgresql(pg_server):  # noqa: F811
    env = dict(os.environ, HANDOFFD_TEST_PG_URL=pg_server.url)
    r = subprocess.run([os.path.join(UNIT_DIR, "test_store")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # Every shared test and the PostgreSQL ones ran (none skipped).
    assert r.stdout.count("[       OK ]") >= 10, r.stdout
    assert "FAILED" not in r.stdout
