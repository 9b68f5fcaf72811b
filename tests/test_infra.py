"""Local infrastructure: real Kafka and PostgreSQL started without Docker.

The first test starts real servers on free ports in a temporary state folder
(a few seconds); the rest check the failure paths without starting anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orchestrator.infra import (
    Endpoints,
    InfraError,
    LocalKafka,
    LocalPostgres,
    infra_down,
    infra_status,
    infra_up,
    testcontainers_endpoints,
)
from orchestrator.infra.manager import docker_answers
from orchestrator.infra.ports import free_port, free_ports, port_free

# Ports a developer's own servers may be using on this machine; never touch them.
RESERVED_PORTS = {5432, 9092, 9093, 19092, 19093}
TOPIC = "infra-test.events"


def _free_port(consecutive: int = 1) -> int:
    """A free port whose `consecutive - 1` successors are free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        candidates = range(port, port + consecutive)
        if not RESERVED_PORTS.intersection(candidates) and all(port_free(p) for p in candidates):
            return port
    raise RuntimeError("no free port found")


@pytest.fixture
def no_env_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Path, LocalKafka, LocalPostgres]]:
    state = tmp_path / "state"
    kafka_port = _free_port(consecutive=2)
    kafka = LocalKafka(state, port=kafka_port, controller_port=kafka_port + 1)
    postgres = LocalPostgres(state, port=_free_port())
    try:
        yield state, kafka, postgres
    finally:
        # Whatever the test did, nothing it started may outlive it.
        kafka.stop(timeout=15)
        postgres.stop(timeout=15)
        assert not kafka.is_running()
        assert not postgres.is_running()


async def _topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def _read_all(bootstrap: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 20
        while len(values) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return values


async def test_servers_serve_and_keep_their_data_across_restarts(
    servers: tuple[Path, LocalKafka, LocalPostgres], no_env_endpoints: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, kafka, postgres = servers
    monkeypatch.setenv("KAFKA_OPTS", "-XX:TieredStopAtLevel=1 -Dorchestrator.test='two words'")
    await asyncio.gather(asyncio.to_thread(kafka.start), asyncio.to_thread(postgres.start))
    assert kafka.is_running() and postgres.is_running()
    # KAFKA_OPTS reached the broker's JVM, word by word as a shell would split it.
    jvm_args = (await asyncio.to_thread(Path(f"/proc/{kafka.pid}/cmdline").read_bytes)).split(b"\0")
    assert b"-XX:TieredStopAtLevel=1" in jvm_args and b"-Dorchestrator.test=two words" in jvm_args
    assert kafka.log_file.is_file() and kafka.log_file.stat().st_size > 0  # log4j config took effect

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, b"hello", key=b"k")
    finally:
        await producer.stop()
    assert await _read_all(kafka.bootstrap, 1) == [b"hello"]

    conn = await asyncpg.connect(postgres.database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.execute("CREATE TABLE survivor (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO survivor VALUES (42)")
    finally:
        await conn.close()

    # A clean stop for Kafka, a crash for PostgreSQL: both must come back with their data.
    await asyncio.to_thread(kafka.stop)
    await asyncio.to_thread(postgres.kill)
    assert not kafka.is_running() and not postgres.is_running()
    assert not kafka.pid_file.exists()

    endpoints = await asyncio.to_thread(infra_up, state, kafka_port=kafka.port, postgres_port=postgres.port)
    assert endpoints == Endpoints(kafka.bootstrap, postgres.database_url, managed=True)
    assert json.loads((state / "endpoints.json").read_text())["kafka_bootstrap"] == kafka.bootstrap
    assert TOPIC in await _topic_names(kafka.bootstrap)
    assert await _read_all(kafka.bootstrap, 1) == [b"hello"]
    conn = await asyncpg.connect(endpoints.database_url)
    try:
        assert await conn.fetchval("SELECT id FROM survivor") == 42
    finally:
        await conn.close()

    # Up again while up: nothing restarts, same answer.
    pid_before = kafka.pid
    again = await asyncio.to_thread(infra_up, state, kafka_port=kafka.port, postgres_port=postgres.port)
    assert again == endpoints and kafka.pid == pid_before

    status = infra_status(state)
    kafka_status, pg_status = status["kafka"], status["postgres"]
    assert isinstance(kafka_status, dict) and isinstance(pg_status, dict)
    assert kafka_status["running"] is True and kafka_status["pid"] == kafka.pid
    assert kafka_status["address"] == kafka.bootstrap
    assert pg_status["running"] is True and pg_status["address"] == postgres.database_url

    await asyncio.to_thread(infra_down, state)
    assert not kafka.is_running() and not postgres.is_running()
    after = infra_status(state)
    for server in ("kafka", "postgres"):
        report = after[server]
        assert isinstance(report, dict) and report["running"] is False and report["pid"] is None
    assert not (state / "endpoints.json").exists()


def test_taken_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(InfraError, match=rf"port {port} .*taken.*KAFKA_BOOTSTRAP_SERVERS"):
            LocalKafka(tmp_path, port=port, controller_port=_free_port()).start()
        with pytest.raises(InfraError, match=rf"port {port} .*taken.*DATABASE_URL"):
            LocalPostgres(tmp_path, port=port).start()
    assert not (tmp_path / "kafka" / "data").exists()  # refused before touching anything


def _fake_java(folder: Path, version_line: str) -> Path:
    java = folder / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return folder


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "JAVA_HOME", str(_fake_java(tmp_path / "jdk11", 'openjdk version "11.0.2" 2019-01-15'))
    )
    with pytest.raises(InfraError, match=r"Java 17 or newer is needed.*found 11 at .*jdk11/bin/java"):
        LocalKafka(tmp_path / "state", port=_free_port(2)).start()

    monkeypatch.setenv("JAVA_HOME", str(_fake_java(tmp_path / "jdk8", 'java version "1.8.0_292"')))
    with pytest.raises(InfraError, match=r"found 8 at"):
        LocalKafka(tmp_path / "state").start()


def test_missing_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("JAVA_HOME", str(empty))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InfraError, match=r"Java 17 or newer is needed.*no `java` was found"):
        LocalKafka(tmp_path / "state").start()


def test_stale_pid_files_are_not_mistaken_for_servers(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path)
    kafka.home.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    kafka.pid_file.write_text(f"{gone.pid}\n")
    assert not kafka.is_running()
    kafka.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert not kafka.is_running()
    kafka.stop()  # must not signal the unrelated process (this one)
    assert not kafka.pid_file.exists()


def test_endpoints_from_environment_start_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.example:5432/orders")
    endpoints = infra_up(tmp_path)
    assert endpoints == Endpoints(
        kafka_bootstrap="broker-a:9092,broker-b:9092",
        database_url="postgresql://app@db.example:5432/orders",
        managed=False,
    )
    assert not (tmp_path / "kafka").exists() and not (tmp_path / "postgres").exists()
    status = infra_status(tmp_path)
    assert status["kafka"] == {
        "managed": False,
        "running": None,
        "pid": None,
        "address": "broker-a:9092,broker-b:9092",
        "log": None,
    }
    infra_down(tmp_path)  # nothing of ours to stop; must not fail


def test_testcontainers_is_skipped_without_a_docker_engine() -> None:
    if docker_answers():
        pytest.skip("a Docker engine answers here; this test is about machines without one")
    started = time.monotonic()
    assert testcontainers_endpoints() is None
    assert time.monotonic() - started < 2


def test_a_free_port_is_below_the_kernels_ephemeral_range_and_bindable() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(20)}
    assert all(10_000 <= port < low for port in ports), ports
    assert len(ports) > 1, "drawn at random, not one port for everyone"
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_ports_drawn_together_are_all_different_and_clear_of_the_ones_to_avoid() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(300, avoid={low - 1})
    assert len(set(ports)) == 300
    assert low - 1 not in ports
    # With every port below the ephemeral range ruled out, the kernel's pick is the way out.
    (fallback,) = free_ports(1, avoid=set(range(10_000, low)))
    assert fallback >= low
