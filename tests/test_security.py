"""Security: Kafka over SASL_SSL (SCRAM-SHA-512) with a principal per stage and the catalog's ACLs,
PostgreSQL over TLS with a password, and no secret in any log line.

The servers are this module's own, started secure by `infra_up(secure=True)` exactly as
`orchestrator infra up --secure` does, separate from the session's plaintext ones.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from orchestrator.contract.envelope import Envelope
from orchestrator.contract.inventory import InventorySnapshot
from orchestrator.db.migrate import migrate
from orchestrator.domain.policy import load_policy
from orchestrator.infra import Endpoints, InfraError, LocalKafka, infra_down, infra_up
from orchestrator.infra.manager import recorded_kafka_security
from orchestrator.kafka_acls import (
    AclApplyError,
    apply_acls,
    catalog_acls,
    service_acls,
    stage_acls,
    stage_user,
)
from orchestrator.promise.service import promise_state, start_promise
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.kafka_client import KafkaConnection, KafkaSecurity, client_kwargs
from orchestrator.runtime.logging import configure_logging, redact_secrets, redact_text, register_secret
from orchestrator.runtime.process import run_stages
from orchestrator.runtime.views import FollowedTopics
from orchestrator.settings import Settings
from orchestrator.stages import ORDER_STAGES, build_stages, order_path_deps
from orchestrator.topics import apply_topics, load_catalog
from tests.harness import CARRIERS, LONDON, Outputs, Pipeline, _collect, ids, node, order
from tests.support import free_ports, publish_events

pytestmark = pytest.mark.integration


@dataclass
class SecureServers:
    state: Path
    endpoints: Endpoints
    kafka: LocalKafka

    def secrets(self) -> list[str]:
        """Every password the servers and their users have."""
        files = [
            *(self.state / "kafka" / "secrets").glob("*.password"),
            self.state / "postgres" / "secrets" / "postgres.password",
        ]
        return [f.read_text().strip() for f in files]

    def stage(self, name: str) -> KafkaConnection:
        return self.kafka.user_connection(stage_user(name))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServers]:
    state = tmp_path_factory.mktemp("secure")
    kafka_port, controller_port, pg_port = free_ports(3)
    with pytest.MonkeyPatch.context() as env:
        # Servers of our own, whatever the session's servers are.
        env.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
        env.delenv("DATABASE_URL", raising=False)
        try:
            endpoints = infra_up(
                state,
                kafka_port=kafka_port,
                kafka_controller_port=controller_port,
                postgres_port=pg_port,
                secure=True,
                timeout=90,
            )
        except InfraError as exc:
            infra_down(state)
            if "built with SSL" in str(exc):
                pytest.skip(str(exc))
            raise
    try:
        yield SecureServers(state, endpoints, LocalKafka(state, port=kafka_port, secure=True))
    finally:
        infra_down(state)


# --------------------------------------------------------------------------- what is reported


def test_the_endpoints_name_files_and_never_a_password(secure: SecureServers) -> None:
    ep = secure.endpoints
    assert ep.kafka_security.protocol == "SASL_SSL"
    assert ep.kafka_security.sasl_mechanism == "SCRAM-SHA-512"
    assert ep.kafka_security.username == "admin"
    assert ep.kafka_security.cafile and Path(ep.kafka_security.cafile).is_file()
    assert "sslmode=verify-full" in ep.database_url and "passfile=" in ep.database_url
    recorded = (secure.state / "endpoints.json").read_text()
    printed = repr(ep) + json.dumps(ep.kafka_security.env()) + ep.database_url + recorded
    for secret in secure.secrets():
        assert secret not in printed
    # What the CLI reads back from the state folder is the same security, password from its file.
    again = recorded_kafka_security(secure.state)
    assert again is not None and again.password == ep.kafka_security.password
    for path in (secure.state / "kafka" / "secrets").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"


# --------------------------------------------------------------------------- the order path, secure


async def test_an_order_is_released_with_every_stage_its_own_principal(secure: SecureServers) -> None:
    logs = io.StringIO()
    configure_logging("debug", stream=logs)
    admin = secure.endpoints.kafka
    dsn = secure.endpoints.database_url
    try:
        await apply_topics(admin, load_catalog())
        await migrate(dsn)
        deps = order_path_deps()
        stop = asyncio.Event()
        # One process per stage in a deployment: here one run_stages each, as that stage's principal.
        runners = [
            asyncio.create_task(
                run_stages(
                    [factory(deps)],
                    Settings(
                        kafka_bootstrap=admin.bootstrap,
                        kafka_security=secure.stage(name).security,
                        database_url=dsn,
                        instance_id=f"secure-{name}",
                        http_port=0,
                        backoff_initial_s=0.1,
                        backoff_max_s=1.0,
                        db_pool_max=3,
                    ),
                    stop,
                    handle_signals=False,
                )
            )
            for name, factory in ORDER_STAGES.items()
        ]
        outputs = Outputs()
        all_stages = asyncio.gather(*runners)
        outputs.runner = all_stages  # type: ignore[assignment]
        collector = asyncio.create_task(_collect(admin, outputs, stop))
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            pipeline = Pipeline(admin, pool, deps, outputs, dsn)
            await pipeline.publish(*CARRIERS)
            await outputs.wait(lambda: "t-ground" in deps.network.state.services, "carrier services")
            n = ids("SEC")
            dc, sku = n("DC"), n("SKU")
            await pipeline.setup_network(node(dc, LONDON), stock={(dc, sku): 5})
            o = order(n("ORD"), [(sku, 2)])
            await pipeline.publish(o)
            await outputs.final_state(o.order_id, "released", timeout=60)
            [wo] = outputs.released(o.order_id)
            assert wo["node_id"] == dc
            assert outputs.states(o.order_id) == ["received", "validated", "planned", "reserved", "released"]
            ssl_in_use = await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert ssl_in_use is True
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(all_stages, collector, return_exceptions=True), 60)
            await pool.close()
    finally:
        configure_logging("info")
    captured = logs.getvalue()
    assert "stage started" in captured, "the stages logged through the redacting set-up"
    server_logs = "".join(p.read_text(errors="replace") for p in secure.state.rglob("*.log") if p.is_file())
    for secret in secure.secrets():
        assert secret not in captured, "a password reached a log line of the stages"
        assert secret not in server_logs, "a password reached a server's log"


# --------------------------------------------------------------------------- refusals


async def _admin_start(conn: KafkaConnection | str) -> None:
    kwargs = client_kwargs(conn) if isinstance(conn, KafkaConnection) else {"bootstrap_servers": conn}
    admin = AIOKafkaAdminClient(**kwargs, request_timeout_ms=5000)
    try:
        async with asyncio.timeout(20):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()


async def test_kafka_refuses_plaintext_wrong_passwords_and_an_untrusted_ca(secure: SecureServers) -> None:
    admin = secure.endpoints.kafka
    await _admin_start(admin)  # the real thing works
    with pytest.raises(Exception):  # noqa: B017 - any failure to connect will do; success will not
        await _admin_start(admin.bootstrap)  # plaintext against the SASL_SSL listener
    wrong = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "admin", "not-the-password", admin.security.cafile)
    with pytest.raises(Exception):  # noqa: B017
        await _admin_start(KafkaConnection(admin.bootstrap, wrong))
    untrusted = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "admin", admin.security.password, cafile=None)
    with pytest.raises(Exception):  # noqa: B017
        await _admin_start(KafkaConnection(admin.bootstrap, untrusted))


async def test_a_stage_principal_is_refused_what_its_acls_do_not_allow(secure: SecureServers) -> None:
    await apply_topics(secure.endpoints.kafka, load_catalog())
    ingest = secure.stage("ingest")
    producer = AIOKafkaProducer(**client_kwargs(ingest), enable_idempotence=True, request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait("orchestrator.orders.ingested.v1", b"{}")  # its own output: fine
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait("wms.work-orders.v1", b"{}")  # release's output
    finally:
        await producer.stop()
    # Reading another stage's input, in another stage's group.
    consumer = AIOKafkaConsumer(
        "orchestrator.plans.v1", **client_kwargs(ingest), group_id="orchestrator.reserve"
    )
    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        async with asyncio.timeout(20):
            await consumer.start()
            await consumer.getmany(timeout_ms=5000)
    await consumer.stop()
    # And it cannot grant itself more.
    with pytest.raises(AclApplyError):
        await apply_acls(ingest, stage_acls(load_catalog(), "release"))


async def test_the_promise_api_follows_the_ledger_as_its_own_principal_and_may_do_nothing_else(
    secure: SecureServers,
) -> None:
    admin = secure.endpoints.kafka
    dsn = secure.endpoints.database_url
    await apply_topics(admin, load_catalog())
    await migrate(dsn)
    n = ids("SECP")
    dc, sku = n("DC"), n("SKU")
    await publish_events(
        admin, "network.updates.v1", [Envelope.new(node(dc, LONDON), source="test/upstream")]
    )
    counted = InventorySnapshot(node_id=dc, sku=sku, on_hand=7, safety_stock=0, as_of=datetime.now(UTC))
    await publish_events(admin, "inventory.updates.v1", [Envelope.new(counted, source="test/upstream")])
    promise = secure.stage("promise")
    settings = Settings(
        kafka_bootstrap=admin.bootstrap,
        kafka_security=promise.security,
        database_url=dsn,
        instance_id="secure-promise",
        http_port=0,
    )
    running = await start_promise(settings, load_policy(), port=0)
    try:
        host, port = running.addresses[0]
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while (await http.get(f"http://{host}:{port}/healthz")).status != 200:
                assert time.monotonic() < deadline, "the promise views never caught up as their principal"
                await asyncio.sleep(0.1)
            async with http.get(f"http://{host}:{port}/v1/availability", params={"sku": sku}) as resp:
                assert resp.status == 200
                (answer,) = (await resp.json())["skus"]
        assert {x["node_id"]: x["available"] for x in answer["nodes"]} == {dc: 7}
        assert dc in running.state.network.state.nodes
    finally:
        await running.close()
    # It writes nothing, joins no group and reads no topic but its own three.
    producer = AIOKafkaProducer(**client_kwargs(promise), request_timeout_ms=10000)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait("inventory.updates.v1", b"{}", key=sku.encode())
    finally:
        await producer.stop()
    grouped = AIOKafkaConsumer(
        "inventory.updates.v1", **client_kwargs(promise), group_id="orchestrator.reserve"
    )
    with pytest.raises(GroupAuthorizationFailedError):
        async with asyncio.timeout(20):
            await grouped.start()
            await grouped.getmany(timeout_ms=5000)
    await grouped.stop()
    # A view of a topic it may not read stops with the reason, not a hang or "no partitions".
    probe = FollowedTopics("probe", ("oms.orders.v1",))
    with pytest.raises(RuntimeError, match=r"not authorised to read topic oms\.orders\.v1"):
        async with asyncio.timeout(20):
            await probe.start(settings, asyncio.Event())
    await probe.close()


async def test_postgres_refuses_connections_without_tls_or_without_the_password(
    secure: SecureServers,
) -> None:
    dsn = secure.endpoints.database_url
    conn = await asyncpg.connect(dsn)
    await conn.close()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(dsn.replace("sslmode=verify-full", "sslmode=disable"))
    port = dsn.split("@127.0.0.1:")[1].split("/")[0]
    with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)):
        await asyncpg.connect(
            f"postgresql://postgres:wrong-password@127.0.0.1:{port}/orchestrator?sslmode=require"
        )


# --------------------------------------------------------------------------- no servers


def test_every_stage_s_acls_cover_what_the_stage_touches() -> None:
    """The catalog (where ACLs come from) and the stages' code must agree, or a stage is refused."""
    catalog = load_catalog()
    for stage in build_stages("all"):
        acls = stage_acls(catalog, stage.name)
        reads = {a.resource_name for a in acls if a.resource_type == "TOPIC" and a.operation == "READ"}
        writes = {a.resource_name for a in acls if a.resource_type == "TOPIC" and a.operation == "WRITE"}
        needs_read = set(stage.inputs) | {v.topic for v in stage.views if getattr(v, "topic", None)}
        needs_write = set(stage.outputs) | {
            dead_letter_topic(t) for t in stage.inputs if t not in stage.observes
        }
        assert needs_read <= reads, f"{stage.name} reads {sorted(needs_read - reads)} without an ACL"
        assert needs_write <= writes, f"{stage.name} writes {sorted(needs_write - writes)} without an ACL"
        assert any(a.resource_type == "GROUP" and a.resource_name == stage.group_id for a in acls)
    assert len(catalog_acls(catalog)) > len(catalog_acls(catalog, externals=False))


def test_the_promise_api_s_acls_are_exactly_the_topics_its_views_read() -> None:
    catalog = load_catalog()
    acls = service_acls(catalog, "promise")
    assert {a.operation for a in acls} == {"READ"} and {a.resource_type for a in acls} == {"TOPIC"}
    reads = {a.resource_name for a in acls}
    assert reads == promise_state(load_policy()).topics
    assert reads == {
        "inventory.updates.v1",
        "orchestrator.reservations.v1",
        "orchestrator.queues.v1",
        "network.updates.v1",
    }
    assert set(acls) <= set(catalog_acls(catalog, externals=False))


def test_secrets_are_masked_in_log_lines_and_reprs(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-from-file\n")
    security = KafkaSecurity.from_env(
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_USERNAME": "orchestrator-ingest",
            "KAFKA_SASL_PASSWORD_FILE": str(secret_file),
        }
    )
    assert security.password == "s3cret-from-file" and security.sasl_mechanism == "SCRAM-SHA-512"
    assert security.env()["KAFKA_SASL_PASSWORD_FILE"] == str(secret_file)
    assert "KAFKA_SASL_PASSWORD" not in security.env()
    settings = Settings(
        kafka_security=security, database_url="postgresql://app:db-secret-1@db.example:5432/orders"
    )
    assert "s3cret-from-file" not in repr(settings) and "db-secret-1" not in repr(settings)
    event = redact_secrets(
        None,
        "info",
        {
            "event": "connect failed postgresql://app:db-secret-1@db.example/orders",
            "error": RuntimeError("auth failed for s3cret-from-file"),
            "sasl_plain_password": "anything",
            "conninfo": "host=db password=db-secret-2 user=app",
            "password_file": str(secret_file),
        },
    )
    line = json.dumps(event)
    assert "db-secret-1" not in line and "s3cret-from-file" not in line and "db-secret-2" not in line
    assert "anything" not in line and str(secret_file) in line
    register_secret("registered-secret-9")
    assert redact_text("x registered-secret-9 y") == "x *** y"
