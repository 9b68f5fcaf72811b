"""One local Apache Kafka broker (KRaft, combined broker + controller), no Docker.

The broker's jars are resolved once from Maven Central into a cache and the broker
runs as a plain `java` process in its own session, so it keeps running after the
Python process that started it (`orchestrator infra up` returns immediately).

This module also holds the small process/port helpers shared with
`postgres_local`, so both servers report problems the same way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from orchestrator.infra.tls import ensure_ca, ensure_secret, ensure_server_cert, write_private
from orchestrator.runtime.kafka_client import Bootstrap, KafkaConnection, KafkaSecurity, client_kwargs

KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17

_RESOURCES = "orchestrator.infra"
_POM_TEMPLATE = "resources/kafka-pom.xml"
_LOG4J_CONFIG = "resources/kafka-log4j2.properties"
#: Written into the jar folder only after Maven succeeded, so an interrupted
#: download is never mistaken for a usable cache.
_JARS_MARKER = ".complete"
_LOCALHOST = "127.0.0.1"
#: The super user of a secure local broker: topics apply, ACLs, migrations' Kafka side, tests.
ADMIN_USER = "admin"
#: The broker's own principal (its certificate's CN) when it talks to its controller over mutual TLS.
_BROKER_PRINCIPAL = "kafka-broker"
_SCRAM = "SCRAM-SHA-512"


class InfraError(RuntimeError):
    """A local server could not be set up; the message says what to do about it."""


# --------------------------------------------------------------------------- helpers


def cache_root() -> Path:
    """Where downloaded artefacts live: $ORCHESTRATOR_CACHE_DIR or ~/.cache/orchestrator."""
    override = os.environ.get("ORCHESTRATOR_CACHE_DIR", "").strip()
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "orchestrator"


def port_is_free(port: int, host: str = _LOCALHOST) -> bool:
    """True when a server could bind `host:port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Both Kafka and PostgreSQL bind with SO_REUSEADDR, so a port that only
        # has connections in TIME_WAIT is usable by them and must count as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def process_cmdline(pid: int) -> str | None:
    """The command line of `pid` joined by spaces, or None where /proc is unavailable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def pid_alive(pid: int) -> bool:
    """True while `pid` is a live (not zombie) process."""
    try:
        # When we are the parent (tests start and stop servers in one process),
        # a killed server stays a zombie until reaped and would look alive.
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `pid` to exit; True when it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def send_signal(pid: int, sig: signal.Signals) -> None:
    """Signal `pid`, ignoring a process that has already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def read_pid(path: Path) -> int | None:
    """The pid in the first line of `path`, or None when missing or unreadable."""
    try:
        first = path.read_text().splitlines()[0].strip()
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({path} is empty)"


def find_java() -> Path:
    """The `java` to run: $JAVA_HOME/bin/java when present, else the first on PATH."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("java")
    if found is None:
        raise InfraError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka locally, but no `java` was found "
            "in $JAVA_HOME/bin or on PATH; install a JDK (e.g. `apt-get install openjdk-17-jre-headless`) "
            "or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
        )
    return Path(found)


_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version(java: Path) -> int:
    """The major version `java -version` reports (8 for the old "1.8" scheme)."""
    try:
        done = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"could not run `{java} -version`: {exc}") from exc
    output = done.stderr + done.stdout
    match = _JAVA_VERSION_RE.search(output)
    if match is None:
        first = output.strip().splitlines()[0] if output.strip() else "(no output)"
        raise InfraError(f"could not tell the Java version of {java} from `java -version`: {first}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        major = int(match.group(2))
    return major


def check_java() -> Path:
    """The usable `java`, or InfraError when it is missing or older than Java 17."""
    java = find_java()
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise InfraError(
            f"Java {MIN_JAVA_MAJOR} or newer is needed to run Kafka locally; found {major} at {java}; "
            "point JAVA_HOME at a newer JDK or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
        )
    return java


def new_cluster_id() -> str:
    """A Kafka cluster id, as `kafka-storage random-uuid` would print it.

    Generated here rather than by StorageTool to save one JVM start on first run.
    Kafka's ids are URL-safe base64 of 16 random bytes; it never hands out ids
    starting with "-" because they read as command-line flags.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def kafka_answers(bootstrap: Bootstrap, timeout: float = 5.0) -> bool:
    """True when a broker at `bootstrap` serves metadata listing at least one live broker.

    Runs its own event loop on a helper thread so that it also works when called
    from code that is already inside a running loop.
    """
    result: list[bool] = []

    def run() -> None:
        result.append(asyncio.run(_probe_metadata(bootstrap, timeout)))

    worker = threading.Thread(target=run, name="kafka-probe", daemon=True)
    worker.start()
    worker.join(timeout * 2 + 5)
    return bool(result and result[0])


async def _probe_metadata(bootstrap: Bootstrap, wait_s: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        **client_kwargs(bootstrap),
        client_id="orchestrator-infra-probe",
        request_timeout_ms=int(wait_s * 1000),
    )
    try:
        async with asyncio.timeout(wait_s):
            await admin.start()
            cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        # Any failure just means "not ready yet"; the caller keeps polling and
        # reports the broker's own log if it never becomes ready.
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


# --------------------------------------------------------------------------- broker


class LocalKafka:
    """One KRaft broker+controller whose data, config, logs and pid live in `<state_dir>/kafka`."""

    def __init__(
        self,
        state_dir: Path,
        port: int = 9092,
        controller_port: int = 9093,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        *,
        secure: bool = False,
        users: Sequence[str] = (),
    ) -> None:
        """`secure`: clients must speak SASL_SSL (SCRAM-SHA-512) and are authorised by ACLs, with
        `admin` as super user; `users` are further SCRAM principals to create (the stages', the
        promise API's)."""
        self.home = Path(state_dir).absolute() / "kafka"
        self.secure = secure
        self.users = tuple(users)
        self.tls_dir = self.home / "tls"
        self.secrets_dir = self.home / "secrets"
        #: Which mode the data folder was formatted in: SCRAM users exist only if made at format time.
        self.mode_file = self.home / "security-mode"
        self.port = port
        self.controller_port = controller_port
        self.version = version
        self.cache_dir = (
            Path(cache_dir) if cache_dir is not None else cache_root() / "kafka" / version / "libs"
        )
        self.properties_file = self.home / "server.properties"
        self.log4j_file = self.home / "log4j2.properties"
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.log_file = self.logs_dir / "server.log"
        self.stdout_file = self.logs_dir / "stdout.log"
        self.pid_file = self.home / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        return f"{_LOCALHOST}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate (secure mode): what clients trust."""
        return self.tls_dir / "ca.crt"

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def user_connection(self, user: str) -> KafkaConnection:
        """How `user` (admin or one of `users`) reaches this broker; the password comes from its file."""
        if not self.secure:
            return KafkaConnection(self.bootstrap)
        secret = self.password_file(user)
        if not secret.is_file():
            raise InfraError(f"no SCRAM user {user!r} on the broker in {self.home} (no {secret})")
        security = KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism=_SCRAM,
            username=user,
            password=secret.read_text().strip(),
            cafile=str(self.ca_file),
            password_file=str(secret),
        )
        return KafkaConnection(self.bootstrap, security)

    @property
    def connection(self) -> KafkaConnection:
        """How the rest of the code reaches this broker: plaintext, or SASL_SSL as the super user."""
        return self.user_connection(ADMIN_USER)

    # ---------------------------------------------------------------- jars

    def ensure_jars(self) -> Path:
        """The folder holding the broker's jars, downloading them with Maven on first use."""
        marker = self.cache_dir / _JARS_MARKER
        if marker.is_file() and marker.read_text().strip() == self.version:
            return self.cache_dir
        check_java()  # Maven needs it too, and its own error would be far less clear.
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError(
                "mvn not found on PATH: Maven is needed once to download the Kafka "
                f"{self.version} jars from Maven Central (e.g. `apt-get install maven`), "
                "or set KAFKA_BOOTSTRAP_SERVERS to use an existing broker"
            )
        print(
            f"orchestrator: downloading Apache Kafka {self.version} jars from Maven Central "
            f"into {self.cache_dir} (first run only)...",
            file=sys.stderr,
            flush=True,
        )
        started = time.monotonic()
        self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
        # Resolve into a sibling temp folder and rename at the end, so a second
        # process (or an interrupted run) never sees a half-filled jar folder.
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=self.cache_dir.parent) as tmp:
            pom = Path(tmp) / "pom.xml"
            template = resources.files(_RESOURCES).joinpath(_POM_TEMPLATE).read_text()
            pom.write_text(template.replace("@KAFKA_VERSION@", self.version))
            out = Path(tmp) / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={out}", "-DincludeScope=runtime",
            ]  # fmt: skip
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=tmp)
            except subprocess.TimeoutExpired as exc:
                raise InfraError(
                    f"mvn did not finish downloading the Kafka {self.version} jars within 15 minutes"
                ) from exc
            if done.returncode != 0:
                output = (done.stdout + done.stderr).strip().splitlines()[-30:]
                raise InfraError(
                    f"mvn could not download the Kafka {self.version} jars (exit {done.returncode}); "
                    "Maven Central must be reachable. Maven said:\n" + "\n".join(output)
                )
            if not (out / f"kafka_2.13-{self.version}.jar").is_file():
                raise InfraError(f"mvn finished but kafka_2.13-{self.version}.jar is not in {out}")
            (out / _JARS_MARKER).write_text(self.version + "\n")
            if marker.is_file():
                return self.cache_dir  # another process finished first
            if self.cache_dir.exists():
                shutil.rmtree(self.cache_dir)
            out.rename(self.cache_dir)
        print(
            f"orchestrator: Kafka jars ready in {time.monotonic() - started:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        return self.cache_dir

    # ---------------------------------------------------------------- lifecycle

    @property
    def pid(self) -> int | None:
        """The broker's pid when it is running from this state folder."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        cmdline = process_cmdline(pid)
        # A pid file can outlive its process and the number be reused by an
        # unrelated one; only a java running our config file counts.
        if cmdline is not None and ("kafka.Kafka" not in cmdline or str(self.properties_file) not in cmdline):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid is not None

    def running_ports(self) -> tuple[int, int] | None:
        """(port, controller_port) from the config the running broker was started with."""
        if not self.is_running():
            return None
        try:
            text = self.properties_file.read_text()
        except OSError:
            return None
        match = re.search(
            r"^listeners=(?:PLAINTEXT|SASL_SSL)://[^:]+:(\d+),CONTROLLER://[^:]+:(\d+)\s*$",
            text,
            re.MULTILINE,
        )
        return (int(match.group(1)), int(match.group(2))) if match else None

    def preflight(self) -> Path:
        """Raise InfraError for a problem start() would hit, before anything is started.

        Returns the `java` that start() will use.
        """
        java = check_java()
        if self.is_running():
            ports = self.running_ports()
            if ports is not None and ports != (self.port, self.controller_port):
                raise InfraError(
                    f"Kafka from {self.home} is already running on port {ports[0]} "
                    f"(controller {ports[1]}), not {self.port}; stop it first (`orchestrator infra down`)"
                )
            return java
        for port, role in ((self.port, "Kafka"), (self.controller_port, "Kafka controller")):
            if not port_is_free(port):
                raise InfraError(
                    f"port {port} ({role}) is taken by another process; set KAFKA_BOOTSTRAP_SERVERS "
                    "to use an existing broker or free the port"
                )
        return java

    def _command(self, java: Path, libs: Path) -> list[str]:
        """The broker's command line: `KAFKA_OPTS` adds JVM flags, as in Kafka's own start script."""
        return [
            str(java),
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            *shlex.split(os.environ.get("KAFKA_OPTS", "")),
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties_file),
        ]

    def start(self, timeout: float = 60) -> None:
        """Start the broker (formatting storage on first start) and wait until it serves metadata."""
        deadline = time.monotonic() + timeout
        java = self.preflight()
        running = self.pid
        if running is not None:
            # Waiting on a broker of the other mode would time out and kill it.
            self._check_mode(formatted=True)
            self._wait_ready(running, deadline)
            return
        self.pid_file.unlink(missing_ok=True)  # stale: its process is gone
        libs = self.ensure_jars()
        for folder in (self.home, self.data_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "meta.properties").is_file()
        self._check_mode(formatted)
        if self.secure:
            self._ensure_tls_and_users()
        # Secure mode's file holds the inter-broker password: readable by its owner only.
        write_private(self.properties_file, self._server_properties())
        self.log4j_file.write_text(resources.files(_RESOURCES).joinpath(_LOG4J_CONFIG).read_text())
        if not formatted:
            self._format(java, libs)
            self.mode_file.write_text(self._mode + "\n")
        cmd = self._command(java, libs)
        with self.stdout_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                # Own session: the broker must outlive `infra up` and must not get
                # the terminal's Ctrl-C meant for whatever runs in the foreground.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self._wait_ready(proc.pid, deadline)

    def stop(self, timeout: float = 30) -> None:
        """Shut the broker down cleanly (SIGTERM), SIGKILL after `timeout`; no-op when stopped."""
        pid = self.pid
        if pid is not None:
            send_signal(pid, signal.SIGTERM)
            if not wait_gone(pid, timeout):
                send_signal(pid, signal.SIGKILL)
                wait_gone(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; for fault-injection tests."""
        pid = self.pid
        if pid is not None:
            send_signal(pid, signal.SIGKILL)
            wait_gone(pid, 10)
        self.pid_file.unlink(missing_ok=True)

    # ---------------------------------------------------------------- internals

    @property
    def _mode(self) -> str:
        return "secure" if self.secure else "plaintext"

    def _check_mode(self, formatted: bool) -> None:
        if not formatted:
            return
        # Folders formatted before secure mode existed have no mode file: they are plaintext.
        recorded = self.mode_file.read_text().strip() if self.mode_file.is_file() else "plaintext"
        if recorded != self._mode:
            raise InfraError(
                f"the Kafka data in {self.data_dir} was formatted {recorded}, not {self._mode}: SCRAM users "
                "are created only when storage is formatted; use another state folder or remove that one"
            )

    def _ensure_tls_and_users(self) -> None:
        ca = ensure_ca(self.tls_dir, "orchestrator local CA (kafka)")
        # The CA's own subject must not map to the broker principal, so the broker gets its own name.
        broker = ensure_server_cert(self.tls_dir, ca, _BROKER_PRINCIPAL)
        # Kafka's file-based PEM key store: the private key and the certificate chain in one file.
        chain = broker.key.read_bytes() + broker.cert.read_bytes() + ca.cert.read_bytes()
        write_private(self.tls_dir / "broker.pem", chain)
        for user in (ADMIN_USER, *self.users):
            ensure_secret(self.password_file(user))

    def _format(self, java: Path, libs: Path) -> None:
        # SCRAM credentials can only be given on the command line; the format JVM lives for a few
        # seconds, on a development box, and its output (which never echoes them) is not kept.
        scram: list[str] = []
        if self.secure:
            for user in (ADMIN_USER, *self.users):
                secret = self.password_file(user).read_text().strip()
                scram += ["--add-scram", f"{_SCRAM}=[name={user},password={secret}]"]
        cmd = [
            str(java),
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(self.properties_file),
            *scram,
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"formatting Kafka storage in {self.data_dir} timed out") from exc
        if done.returncode != 0:
            raise InfraError(
                f"formatting Kafka storage in {self.data_dir} failed (exit {done.returncode}):\n"
                + (done.stdout + done.stderr).strip()
            )

    def _wait_ready(self, pid: int, deadline: float) -> None:
        while True:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(
                    f"Kafka exited during start-up; last lines of {self.log_file}:\n"
                    f"{log_tail(self.log_file)}\n--- {self.stdout_file}:\n{log_tail(self.stdout_file, 15)}"
                )
            # The cheap TCP check first keeps aiokafka from logging a connection
            # error on every poll while the JVM is still booting.
            if tcp_answers(_LOCALHOST, self.port, timeout=1.0) and kafka_answers(self.connection, 5.0):
                return
            if time.monotonic() >= deadline:
                # A half-started broker left behind would hold the ports and confuse the next try.
                self.kill()
                raise InfraError(
                    f"Kafka did not answer on {self.bootstrap} in time; last lines of {self.log_file}:\n"
                    f"{log_tail(self.log_file)}"
                )
            time.sleep(0.25)

    def _server_properties(self) -> str:
        settings: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{_LOCALHOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{_LOCALHOST}:{self.port},CONTROLLER://{_LOCALHOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_LOCALHOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Topics are part of the contract and created explicitly; a typo must
            # fail loudly instead of silently creating a new topic.
            "auto.create.topics.enable": "false",
            "num.partitions": 1,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            # A single broker can only ever hold one replica of the internal topics.
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # The default 50 partitions each make the first consumer group and the
            # first transaction noticeably slower to start on a 2-core box.
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.num.partitions": 8,
            "group.initial.rebalance.delay.ms": 0,
            # Lets producers ask for up to 15 min; hung transactions of crashed
            # workers are aborted by the coordinator after their own timeout.
            "transaction.max.timeout.ms": 900_000,
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": 10_000,
            # A dev box should not fill its disk: keep 3 days or 1 GiB per partition,
            # in 64 MiB segments so retention can actually drop something.
            "log.retention.hours": 72,
            "log.retention.bytes": 1 << 30,
            "log.segment.bytes": 64 << 20,
            "log.cleaner.dedupe.buffer.size": 32 << 20,
            # After a crash the restarted broker cannot register until the controller
            # has expired its previous session; 9 s by default, which every
            # kill-and-restart fault test would pay. Heartbeats stay local to this
            # box, so a shorter session is still far above any real delay.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 4500,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
        }
        if self.secure:
            settings.update(self._secure_properties())
        lines = ["# Written by orchestrator.infra on every start; edits are overwritten."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _secure_properties(self) -> dict[str, str | int]:
        """What turns the broker secure: SASL_SSL for clients, mutual TLS to the controller, ACLs."""
        admin_secret = self.password_file(ADMIN_USER).read_text().strip()
        listeners = f"SASL_SSL://{_LOCALHOST}:{self.port},CONTROLLER://{_LOCALHOST}:{self.controller_port}"
        return {
            "listeners": listeners,
            "advertised.listeners": f"SASL_SSL://{_LOCALHOST}:{self.port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            # The transaction coordinator writes its markers through this listener, to itself.
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": _SCRAM,
            "sasl.mechanism.inter.broker.protocol": _SCRAM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{ADMIN_USER}" password="{admin_secret}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls_dir / "broker.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            # SCRAM users live in the metadata the controller serves, so the controller listener cannot
            # use them: the broker proves itself there with its certificate instead.
            "listener.name.controller.ssl.client.auth": "required",
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{ADMIN_USER};User:{_BROKER_PRINCIPAL}",
            "allow.everyone.if.no.acl.found": "false",
        }
