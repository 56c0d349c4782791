"""A PostgreSQL cluster of the test's own, which it may crash and start again.

Never the shared server on 5432: a free port, a temporary folder, trust auth, loopback only.
``pg_ctl stop -m immediate`` is the outage (connections drop, no clean shutdown); ``start`` on
the same port and data folder is the recovery.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sandbox.launch import free_port

FOLDER_PREFIX = "ctt-faults-pg-"
OWNER_FILE = "owner.pid"


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, trust auth, loopback only.

    As root, ``initdb`` and ``postgres`` refuse to run, so the server runs as the ``postgres``
    user in a folder it owns.
    """

    def __init__(self, root: Path | None = None) -> None:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda path: int(Path(path).parent.name.split(".")[0]),
        )
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1])
        self.port = free_port()
        self.root = root or Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=_parent()))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            self._run_as = ["runuser", "-u", "postgres", "--"]
        if root is None:
            # Whose cluster this is: a later run stops it if this process dies without cleaning up.
            (self.root / OWNER_FILE).write_text(str(os.getpid()), "ascii")
            if self._run_as:
                owner = pwd.getpwnam("postgres")
                os.chown(self.root, owner.pw_uid, owner.pw_gid)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [*self._run_as, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def create(self) -> None:
        """``initdb`` the cluster (no fsync: a crash here is a process crash, not a power cut)."""
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start (or restart after a crash: recovery runs first) and wait until it accepts."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        started = self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
            check=False,
        )
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{self.server_log()}")

    def crash(self) -> None:
        """Stop at once (``-m immediate``): connections drop, nothing is shut down cleanly."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def server_log(self) -> str:
        """The server's own log, for failure messages."""
        with suppress(OSError):
            return self.log.read_text("utf-8", "replace")[-4000:]
        return ""

    def destroy(self) -> None:
        """Stop if running and delete the folder; safe to call after any failure."""
        with suppress(Exception):
            if self.data.exists() and self.running:
                self.crash()
        shutil.rmtree(self.root, ignore_errors=True)


def _parent() -> str | None:
    # As root the server runs as ``postgres``, which must reach the folder: /tmp, whatever
    # TMPDIR says. The socket path must also stay short (about 100 bytes at most).
    return "/tmp" if os.geteuid() == 0 else None  # noqa: S108


def reap_orphans() -> int:
    """Stop and delete clusters left by test runs that were killed; returns how many."""
    reaped = 0
    for folder in Path(_parent() or tempfile.gettempdir()).glob(FOLDER_PREFIX + "*"):
        try:
            owner = int((folder / OWNER_FILE).read_text("ascii"))
            os.kill(owner, 0)
        except ProcessLookupError:
            PrivatePostgres(folder).destroy()
            reaped += 1
        except (OSError, ValueError):
            continue  # not ours to judge: unreadable, or still being set up
    return reaped


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A created and started cluster for the block, always destroyed afterwards."""
    reap_orphans()
    cluster = PrivatePostgres()
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
