"""The `orchestrator` command line, end to end: each test runs it as a user would (a subprocess
with KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL set) and checks what it prints and returns."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from orchestrator.contract.schemas import default_schema_dir
from orchestrator.topics import load_catalog
from tests.conftest import Servers

pytestmark = pytest.mark.integration

#: The external topics DESIGN.md names: the public contract.
EXTERNAL_TOPICS = (
    "oms.orders.v1",
    "inventory.updates.v1",
    "network.updates.v1",
    "wms.events.v1",
    "carrier.events.v1",
    "wms.work-orders.v1",
    "oms.status.v1",
    "customer.notifications.v1",
)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:  # what a failed assertion shows
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


async def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> Result:
    """`orchestrator ARGS` in a child process, with only the variables given (plus PATH and HOME)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "JAVA_HOME")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        *args,
        env={**base, **env},
        # Not the checkout: its .state/endpoints.json must not leak into what is tested.
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture
def env(bootstrap: str, servers: Servers, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": servers.endpoints.database_url,
        "ORCHESTRATOR_STATE_DIR": str(tmp_path / "state"),
    }


async def test_db_migrate_applies_then_reports_up_to_date(
    database_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    # The suite's database is migrated by its fixture already: a fresh one shows the first run too.
    name = f"cli_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        fresh = with_database(database_url, name)
        env = {**env, "DATABASE_URL": fresh}
        first = await cli("db", "migrate", env=env, cwd=tmp_path)
        assert first.code == 0, str(first)
        assert first.out.startswith("applied: "), str(first)
        assert "0001_runtime" in first.out, str(first)
        second = await cli("db", "migrate", env=env, cwd=tmp_path)
        assert second.code == 0, str(second)
        assert second.out.strip() == "database is up to date", str(second)
        conn = await asyncpg.connect(fresh)
        try:
            assert await conn.fetchval("SELECT to_regclass('runtime_processed_events') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_db_migrate_without_a_server_says_where_it_looked(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://someone:s3cret@127.0.0.1:{port}/nowhere"
    result = await cli("db", "migrate", env={**env, "DATABASE_URL": url}, cwd=tmp_path)
    assert result.code == 2, str(result)
    assert "Traceback" not in result.err, str(result)
    assert f"127.0.0.1:{port}/nowhere" in result.err, str(result)
    assert "s3cret" not in result.err, str(result)


async def test_topics_list_shows_the_public_topics_and_their_dead_letters(
    env: dict[str, str], tmp_path: Path
) -> None:
    listed = await cli("topics", "list", env=env, cwd=tmp_path)
    assert listed.code == 0, str(listed)
    names = {line.split()[0] for line in listed.out.splitlines() if line.strip()}
    missing = [t for t in EXTERNAL_TOPICS if t not in names]
    assert not missing, f"not listed: {missing}\n{listed}"
    dead_letters = [t.dead_letter for t in load_catalog().topics if t.dead_letter is not None]
    assert "oms.orders.v1.dlq" in dead_letters
    assert not [d for d in dead_letters if d not in names], str(listed)


async def test_topics_apply_creates_from_the_catalog_then_reports_unchanged(
    bootstrap: str, env: dict[str, str], tmp_path: Path
) -> None:
    prefix = f"test.cli.{uuid.uuid4().hex[:10]}"
    catalog = tmp_path / "topics.yaml"
    catalog.write_text(
        f"""
defaults:
  retention: 1d
dead_letters:
  retention: 2d
topics:
  - name: {prefix}.orders
    description: Orders in, read by a stage, so it has a dead-letter topic.
    partitions: 2
    key: order_id
    schemas: [order.created.v1]
    producers: [external:oms]
    consumers: [ingest]
    retention: 12h
    dead_letter: {prefix}.orders.dlq
  - name: {prefix}.notes
    description: Written by a stage, read by nobody inside.
    partitions: 1
    key: order_id
    producers: [ingest]
    consumers: [external:someone]
"""
    )
    env = {**env, "ORCHESTRATOR_TOPICS_FILE": str(catalog)}
    first = await cli("topics", "apply", env=env, cwd=tmp_path)
    assert first.code == 0, str(first)
    for name in (f"{prefix}.orders", f"{prefix}.orders.dlq", f"{prefix}.notes"):
        assert f"created    {name}" in first.out, str(first)
    assert "in sync with the catalog" in first.out, str(first)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = {
            t["topic"]: len(t["partitions"])
            for t in await admin.describe_topics(
                [f"{prefix}.orders", f"{prefix}.orders.dlq", f"{prefix}.notes"]
            )
            if t["error_code"] == 0
        }
        [configs] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{prefix}.orders")]
        )
        entries = {
            e["config_names"]: e["config_value"]
            for e in configs.to_object()["resources"][0]["config_entries"]
        }
    finally:
        await admin.close()
    assert described == {f"{prefix}.orders": 2, f"{prefix}.orders.dlq": 2, f"{prefix}.notes": 1}
    assert entries["retention.ms"] == str(12 * 3600 * 1000)

    second = await cli("topics", "apply", env=env, cwd=tmp_path)
    assert second.code == 0, str(second)
    assert "created" not in second.out, str(second)
    assert "unchanged  3 topic(s)" in second.out, str(second)
    assert "in sync with the catalog" in second.out, str(second)


async def test_topics_with_a_broken_catalog_say_what_is_wrong(env: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "topics.yaml"
    catalog.write_text("topics:\n  - name: some.topic\n    partitions: 0\n    key: order_id\n")
    result = await cli("topics", "list", env={**env, "ORCHESTRATOR_TOPICS_FILE": str(catalog)}, cwd=tmp_path)
    assert result.code == 2, str(result)
    assert "Traceback" not in result.err, str(result)
    for words in (str(catalog), "some.topic", "partitions"):
        assert words in result.err, str(result)


async def test_schemas_export_writes_the_committed_schemas(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = await cli("schemas", "export", "--out", str(out), env=env, cwd=tmp_path)
    assert result.code == 0, str(result)
    committed = {p.name: p.read_text() for p in default_schema_dir().glob("*.json")}
    exported = {p.name: p.read_text() for p in out.glob("*.json")}
    assert sorted(exported) == sorted(committed)
    assert f"wrote {len(committed)} schemas" in result.out, str(result)
    differing = [name for name in committed if exported[name] != committed[name]]
    assert not differing, f"exported schemas differ from schemas/: {differing} (run `make schemas`)"


async def test_run_an_unknown_stage_lists_the_known_ones(env: dict[str, str], tmp_path: Path) -> None:
    from orchestrator.stages import ORDER_STAGES

    result = await cli("run", "nosuchstage", env=env, cwd=tmp_path)
    assert result.code == 2, str(result)
    assert "unknown stage 'nosuchstage'" in result.err, str(result)
    for known in [*ORDER_STAGES, "relay", "all"]:
        assert known in result.err, str(result)


async def test_run_relay_needs_its_topics(env: dict[str, str], tmp_path: Path) -> None:
    result = await cli("run", "relay", env=env, cwd=tmp_path)
    assert result.code == 2, str(result)
    assert "relay needs --input TOPIC and --output TOPIC" in result.err, str(result)

    missing = f"missing.{uuid.uuid4().hex[:8]}"
    result = await cli("run", "relay", "--input", missing, "--output", "x", env=env, cwd=tmp_path)
    assert result.code == 2, str(result)
    assert "Traceback" not in result.err, str(result)
    assert "topics missing" in result.err, str(result)
    for topic in (missing, f"{missing}.dlq", "x"):
        assert topic in result.err, str(result)
    assert "orchestrator topics apply" in result.err, str(result)


async def test_infra_status_reports_both_servers_as_json(env: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "infra-state"
    result = await cli("infra", "status", "--state-dir", str(state), env=env, cwd=tmp_path)
    assert result.code == 0, str(result)
    status = json.loads(result.out)
    assert set(status) >= {"kafka", "postgres"}, status
    assert status["kafka"]["running"] is False and status["postgres"]["running"] is False, status
    assert status["state_dir"] == str(state.absolute())
