"""A throwaway PostgreSQL server for the tests, from Debian's postgresql package.

    server = PgServer()            # initdb, start, create the role and the database
    server.conninfo                # "host=127.0.0.1 port=N dbname=handoffd user=handoffd"
    server.password                # the role's password (not in conninfo: tests pass it apart)
    server.psql("SELECT 1")        # a query as the superuser over the unix socket
    server.create_db("t1"); server.url_for("t1")   # a fresh database per test, its URI
    server.restart(); server.stop(); server.cleanup()

As a pytest fixture: `from pg_server import pg_server` in a test module (one server per module).

Debian's binaries live under /usr/lib/postgresql/<version>/bin (the newest is taken), never
whatever `initdb` is first on PATH. PostgreSQL refuses to run as root, so when the tests
run as root the data directory is handed to the `postgres` system user and every server
program runs through `runuser -u postgres --`. The server listens on 127.0.0.1 on a port
free at start time, its unix socket sits in the temporary directory, and fsync keeps its
default (on), so commit figures are real. `password_encryption` is scram-sha-256 and
host connections must authenticate, so a wrong password fails as it would in production.
"""
import atexit
import glob
import os
import pathlib
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile

import pytest

START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections
DB_NAME = "handoffd"
DB_USER = "handoffd"


def debian_bindir():
    """The newest /usr/lib/postgresql/<version>/bin that holds initdb and postgres."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        version = pathlib.Path(d).parent.name
        if version.isdigit() and os.access(f"{d}/initdb", os.X_OK) and os.access(f"{d}/postgres", os.X_OK):
            found.append((int(version), d))
    if not found:
        raise RuntimeError("no PostgreSQL server under /usr/lib/postgresql/*/bin: "
                           "install Debian's postgresql package (.ci/install-deps)")
    return max(found)[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    """The environment without libpq's PG* variables, so nothing of the caller's leaks in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


class PgServer:
    def __init__(self):
        self.bindir = debian_bindir()
        self.as_root = os.geteuid() == 0
        self.os_user = "postgres" if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="handoffd-pg-"))
        self.datadir = self.tmp / "data"
        self.sockdir = self.tmp / "sock"
        self.logfile = self.tmp / "server.log"
        self.password = "pw-" + secrets.token_hex(12)
        self.port = None
        self.running = False
        atexit.register(self.cleanup)
        try:
            self._initdb()
            self._start_on_free_port()
            self._create_role_and_db()
        except BaseException:
            self.cleanup()
            raise

    # {===== running the server's programs

    def _cmd(self, prog, *args):
        cmd = [f"{self.bindir}/{prog}", *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def _run(self, prog, *args, check=True, timeout=60, input=None):
        r = subprocess.run(self._cmd(prog, *args), capture_output=True, text=True,
                           timeout=timeout, env=clean_env(), cwd=self.tmp, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{prog} {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
                               f"{self.log_tail()}")
        return r

    def log_tail(self, n=30):
        try:
            return "\n--- server log ---\n" + "\n".join(self.logfile.read_text().splitlines()[-n:])
        except OSError:
            return ""

    # }=====

    def _initdb(self):
        self.sockdir.mkdir()
        if self.as_root:
            # The whole temporary tree is the server's; root can still read the log.
            for p in (self.tmp, self.sockdir):
                shutil.chown(p, "postgres", "postgres")
        # --no-sync only skips initdb's own final flush of the template files; the server
        # itself runs with fsync on.
        self._run("initdb", "-D", str(self.datadir), "-U", self.os_user, "--no-sync",
                  "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256")

    def _start_on_free_port(self):
        # The port is free when we look; another process may take it before the server
        # binds, so a bind failure retries on another one.
        for _ in range(3):
            self.port = free_port()
            r = self._pg_ctl_start()
            if r.returncode == 0:
                self.running = True
                return
            if "could not bind" not in self.log_tail(10):
                break
        raise RuntimeError(f"postgres did not start ({r.returncode}):\n{r.stdout}{r.stderr}{self.log_tail()}")

    def _pg_ctl_start(self):
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.sockdir} "
                f"-c password_encryption=scram-sha-256")
        return self._run("pg_ctl", "start", "-w", "-t", str(START_TIMEOUT), "-D", str(self.datadir),
                         "-l", str(self.logfile), "-o", opts, check=False, timeout=START_TIMEOUT + 10)

    def _create_role_and_db(self):
        self.psql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{self.password}'", db="postgres")
        self.psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}", db="postgres")

    @property
    def conninfo(self):
        """A libpq connection string without the password (tests pass it apart)."""
        return f"host=127.0.0.1 port={self.port} dbname={DB_NAME} user={DB_USER}"

    @property
    def url(self):
        """The same as a URI with the password in it, the form the `state` key takes."""
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def url_for(self, db):
        """The URI of database DB (see create_db)."""
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def create_db(self, db):
        """A fresh empty database owned by the test role: one per test, no leftovers."""
        self.psql(f"CREATE DATABASE {db} OWNER {DB_USER}", db="postgres")
        return db

    def psql(self, sql, db=DB_NAME):
        """Runs SQL as the superuser over the unix socket; returns the unaligned output."""
        r = self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockdir),
                      "-p", str(self.port), "-U", self.os_user, "-d", db, "-c", sql, timeout=30)
        return r.stdout.strip()

    def stop(self, mode="fast"):
        """Stops the server (fast: active transactions are rolled back, clients cut off)."""
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-t", str(START_TIMEOUT), "-m", mode, "-D", str(self.datadir))
            self.running = False

    def start(self):
        """Starts the stopped server again on the same port."""
        if not self.running:
            r = self._pg_ctl_start()
            if r.returncode != 0:
                raise RuntimeError(f"postgres did not restart:\n{r.stdout}{r.stderr}{self.log_tail()}")
            self.running = True

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        """Stops the server if it runs and removes every file; safe to call twice."""
        if self.running:
            try:
                self.stop(mode="immediate")
            except Exception:  # noqa: BLE001 - cleanup must go on and remove the files
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    """One PostgreSQL server per test module, removed at the end even when a test failed."""
    server = PgServer()
    try:
        yield server
    finally:
        server.cleanup()
