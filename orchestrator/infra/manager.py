"""Bring the development infrastructure up and down as a unit.

`infra_up` honours KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (each on its own), and
starts a local server only for what they leave unset. What it did is recorded in
`<state_dir>/endpoints.json`, which `infra_down` and `infra_status` read back.
"""

from __future__ import annotations

import json
import os
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.infra.kafka_local import InfraError, LocalKafka
from orchestrator.infra.postgres_local import LocalPostgres
from orchestrator.runtime.kafka_client import PLAINTEXT, KafkaConnection, KafkaSecurity

ENDPOINTS_FILE = "endpoints.json"
#: Set to 1 to make `infra_up` (and so `orchestrator start`) start the local servers secure.
SECURE_ENV = "ORCHESTRATOR_LOCAL_SECURE"


def secure_requested() -> bool:
    """True when ORCHESTRATOR_LOCAL_SECURE asks for secure local servers."""
    return os.environ.get(SECURE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Endpoints:
    """Where the engine finds its Kafka and PostgreSQL."""

    kafka_bootstrap: str
    database_url: str
    #: True when at least one of the two servers was started locally by
    #: `infra_up` (so `infra_down` has something to stop); False when both come
    #: from the environment or testcontainers.
    managed: bool
    #: How clients reach Kafka: SASL_SSL as the local super user in secure mode (its password in a file).
    kafka_security: KafkaSecurity = PLAINTEXT

    @property
    def kafka(self) -> KafkaConnection:
        return KafkaConnection(self.kafka_bootstrap, self.kafka_security)


def infra_up(
    state_dir: Path,
    *,
    kafka_port: int = 9092,
    postgres_port: int = 5432,
    kafka_controller_port: int | None = None,
    timeout: float = 120,
    secure: bool | None = None,
) -> Endpoints:
    """Start whatever the environment does not provide and return the endpoints.

    Calling it again while the servers run is a no-op that returns the same
    endpoints. The controller port defaults to `kafka_port + 1`.

    `secure` (default: ORCHESTRATOR_LOCAL_SECURE): Kafka speaks SASL_SSL with
    SCRAM users for the admin and every stage and the catalog's ACLs; PostgreSQL
    requires TLS and a password. Certificates and passwords are kept in the
    state folder; the endpoints name the CA and password files, never a password.
    """
    secure = secure_requested() if secure is None else secure
    state_dir = Path(state_dir).absolute()
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    env_db = os.environ.get("DATABASE_URL", "").strip()
    controller_port = kafka_controller_port if kafka_controller_port is not None else kafka_port + 1
    kafka = (
        None
        if env_kafka
        else LocalKafka(
            state_dir, port=kafka_port, controller_port=controller_port, secure=secure, users=_stage_users()
        )
    )
    postgres = None if env_db else LocalPostgres(state_dir, port=postgres_port, secure=secure)

    # Check both before starting either, so a missing Java or a taken port does
    # not leave a half-started pair behind.
    if kafka is not None:
        kafka.preflight()
    if postgres is not None:
        postgres.preflight()

    state_dir.mkdir(parents=True, exist_ok=True)
    if kafka is not None or postgres is not None:
        # Kafka's JVM start dominates; PostgreSQL comes up in its shadow.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="infra-up") as pool:
            started: list[Future[None]] = []
            if kafka is not None:
                started.append(pool.submit(kafka.start, timeout))
            if postgres is not None:
                started.append(pool.submit(postgres.start, timeout))
            errors = [exc for exc in (f.exception() for f in started) if exc is not None]
        if errors:
            raise errors[0]
    if kafka is not None and secure:
        _apply_catalog_acls(kafka)

    endpoints = Endpoints(
        kafka_bootstrap=env_kafka or (kafka.bootstrap if kafka is not None else ""),
        database_url=env_db or (postgres.database_url if postgres is not None else ""),
        managed=kafka is not None or postgres is not None,
        kafka_security=kafka.connection.security if kafka is not None else KafkaSecurity.from_env(),
    )
    record: dict[str, object] = {
        "kafka_bootstrap": endpoints.kafka_bootstrap,
        "database_url": endpoints.database_url,
        "managed": endpoints.managed,
        # Paths and names only: the password stays in its file.
        "kafka_security": _security_record(endpoints.kafka_security) if kafka is not None else None,
        "kafka": {
            "managed": kafka is not None,
            "port": kafka_port if kafka is not None else None,
            "controller_port": controller_port if kafka is not None else None,
        },
        "postgres": {
            "managed": postgres is not None,
            "port": postgres_port if postgres is not None else None,
        },
    }
    _write_json(state_dir / ENDPOINTS_FILE, record)
    return endpoints


def _stage_users() -> tuple[str, ...]:
    from orchestrator.kafka_acls import stage_users

    return stage_users()


def _apply_catalog_acls(kafka: LocalKafka) -> None:
    """Every stage's ACLs from the catalog, as the super user (creating an existing rule is a no-op)."""
    import asyncio

    from orchestrator.kafka_acls import apply_acls, catalog_acls
    from orchestrator.topics import load_catalog

    asyncio.run(apply_acls(kafka.connection, catalog_acls(load_catalog())))


def _security_record(security: KafkaSecurity) -> dict[str, object]:
    return {
        "protocol": security.protocol,
        "sasl_mechanism": security.sasl_mechanism,
        "username": security.username,
        "password_file": security.password_file,
        "cafile": security.cafile,
    }


def recorded_kafka_security(state_dir: Path) -> KafkaSecurity | None:
    """The Kafka security `infra_up` recorded in `state_dir` (None: none recorded, or plaintext)."""
    record = _as_dict(_read_json(Path(state_dir).absolute() / ENDPOINTS_FILE).get("kafka_security"))
    if not record or record.get("protocol") in (None, "PLAINTEXT"):
        return None
    env = {
        "KAFKA_SECURITY_PROTOCOL": record.get("protocol"),
        "KAFKA_SASL_MECHANISM": record.get("sasl_mechanism"),
        "KAFKA_SASL_USERNAME": record.get("username"),
        "KAFKA_SASL_PASSWORD_FILE": record.get("password_file"),
        "KAFKA_SSL_CAFILE": record.get("cafile"),
    }
    return KafkaSecurity.from_env({k: str(v) for k, v in env.items() if isinstance(v, str)})


def infra_down(state_dir: Path, timeout: float = 30) -> None:
    """Stop the local servers `infra_up` started in `state_dir`; no-op when none run."""
    state_dir = Path(state_dir).absolute()
    # Stop by what runs from the folder rather than by endpoints.json, so servers
    # survive neither a lost endpoints file nor an `infra_up` that failed half-way.
    kafka = LocalKafka(state_dir)
    postgres = LocalPostgres(state_dir)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="infra-down") as pool:
        stopped = [pool.submit(kafka.stop, timeout), pool.submit(postgres.stop, timeout)]
        errors = [exc for exc in (f.exception() for f in stopped) if exc is not None]
    if errors:
        raise errors[0]
    (state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)


def infra_status(state_dir: Path) -> dict[str, object]:
    """Per server: managed?, running?, pid, address and log path (JSON-serialisable).

    `running` is None for a server given by the environment, since only its
    address is known here.
    """
    state_dir = Path(state_dir).absolute()
    record = _read_json(state_dir / ENDPOINTS_FILE)
    kafka_rec = _as_dict(record.get("kafka"))
    pg_rec = _as_dict(record.get("postgres"))

    kafka = LocalKafka(state_dir)
    kafka_pid = kafka.pid
    ports = kafka.running_ports()
    kafka_managed = bool(kafka_rec.get("managed", True)) or kafka_pid is not None
    kafka_port = ports[0] if ports else _as_int(kafka_rec.get("port"), kafka.port)
    kafka_status: dict[str, object] = {
        "managed": kafka_managed,
        "running": kafka_pid is not None if kafka_managed else None,
        "pid": kafka_pid,
        "address": f"127.0.0.1:{kafka_port}" if kafka_managed else record.get("kafka_bootstrap"),
        "log": str(kafka.log_file) if kafka_managed else None,
    }

    postgres = LocalPostgres(state_dir)
    pg_pid = postgres.pid
    pg_managed = bool(pg_rec.get("managed", True)) or pg_pid is not None
    pg_port = postgres.running_port() or _as_int(pg_rec.get("port"), postgres.port)
    pg_status: dict[str, object] = {
        "managed": pg_managed,
        "running": pg_pid is not None if pg_managed else None,
        "pid": pg_pid,
        "address": LocalPostgres(state_dir, port=pg_port).database_url
        if pg_managed
        else record.get("database_url"),
        "log": str(postgres.log_file) if pg_managed else None,
    }
    return {"state_dir": str(state_dir), "kafka": kafka_status, "postgres": pg_status}


def testcontainers_endpoints() -> Endpoints | None:
    """Kafka (KRaft) and PostgreSQL containers from testcontainers, when a Docker engine answers.

    Returns None, quickly and without raising, when no engine answers. The
    containers are removed by testcontainers' reaper when this process exits.
    """
    if not docker_answers():
        return None
    try:
        from testcontainers.community.kafka import KafkaContainer
        from testcontainers.community.postgres import PostgresContainer

        kafka = KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft()
        kafka.start()
        postgres = PostgresContainer(
            "postgres:17", username="postgres", password="postgres", dbname="orchestrator", driver=None
        )
        postgres.start()
        bootstrap = str(kafka.get_bootstrap_server())
        database_url = str(postgres.get_connection_url())
    except Exception as exc:
        raise InfraError(f"a Docker engine answers but the test containers did not start: {exc}") from exc
    return Endpoints(kafka_bootstrap=bootstrap, database_url=database_url, managed=False)


def docker_answers(timeout: float = 1.0) -> bool:
    """True when the Docker engine named by DOCKER_HOST (or the default socket) answers a ping."""
    host = os.environ.get("DOCKER_HOST", "").strip() or "unix:///var/run/docker.sock"
    parsed = urlsplit(host)
    request = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    try:
        if parsed.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(parsed.path)
        elif parsed.scheme in ("tcp", "http", "https") and parsed.hostname:
            sock = socket.create_connection((parsed.hostname, parsed.port or 2375), timeout=timeout)
            if os.environ.get("DOCKER_TLS_VERIFY") or parsed.scheme == "https":
                # Speaking TLS here is not worth it; an open engine port is a good
                # enough sign, and testcontainers reports a real failure clearly.
                sock.close()
                return True
        else:
            return False
        with sock:
            sock.sendall(request)
            reply = sock.recv(64)
    except OSError:
        return False
    status_line = reply.split(b"\r\n", 1)[0].split()
    return len(status_line) >= 2 and status_line[0].startswith(b"HTTP/") and status_line[1] == b"200"


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see a half-written file


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _as_dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default
