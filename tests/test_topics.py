"""The topic catalog: its content, its checks, and applying it to a real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orchestrator.contract.registry import EVENT_TYPES
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.topics import (
    FOREVER,
    STAGE_NAMES,
    TOPICS_FILE_ENV,
    CatalogError,
    TopicCatalog,
    TopicSpec,
    apply_topics,
    default_catalog_path,
    format_catalog,
    format_retention,
    load_catalog,
    parse_retention,
)

REPO = Path(__file__).resolve().parents[1]

#: The public contract of DESIGN.md: these names never change.
EXTERNAL_TOPICS = (
    "oms.orders.v1",
    "inventory.updates.v1",
    "network.updates.v1",
    "wms.work-orders.v1",
    "wms.events.v1",
    "carrier.events.v1",
    "oms.status.v1",
    "customer.notifications.v1",
    # Returns and exchanges (issue 10): the OMS's returns, nodes' return events.
    "oms.returns.v1",
    "wms.return-events.v1",
)
INTERNAL_TOPICS = (
    "orchestrator.orders.ingested.v1",
    "orchestrator.orders.validated.v1",
    "orchestrator.plans.v1",
    "orchestrator.reservations.v1",
    "orchestrator.released.v1",
    "orchestrator.reroutes.v1",
    "orchestrator.exceptions.v1",
    "orchestrator.status.v1",
    "orchestrator.timers.v1",
    "orchestrator.supply.v1",
    "orchestrator.queues.v1",
    "orchestrator.returns.timers.v1",
)


@pytest.fixture(scope="module")
def catalog() -> TopicCatalog:
    return load_catalog()


# ---------------------------------------------------------------------------
# The shipped catalog
# ---------------------------------------------------------------------------


def test_catalog_loads_from_the_repo_root(catalog: TopicCatalog) -> None:
    assert catalog.source == REPO / "topics.yaml"
    assert {t.name for t in catalog.topics} == set(EXTERNAL_TOPICS) | set(INTERNAL_TOPICS)


def test_env_var_points_at_another_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(
        "topics:\n  - {name: a.b.v1, partitions: 2, key: order_id, producers: [external:x]}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv(TOPICS_FILE_ENV, str(other))
    assert default_catalog_path() == other
    assert load_catalog().names() == ("a.b.v1",)


def test_external_topics_keep_their_exact_names(catalog: TopicCatalog) -> None:
    for name in EXTERNAL_TOPICS:
        assert catalog.get(name).name == name


def test_every_listed_schema_exists(catalog: TopicCatalog) -> None:
    for topic in catalog.topics:
        for event_type in topic.schemas:
            assert event_type in EVENT_TYPES, f"{topic.name}: {event_type}"
            assert (REPO / "schemas" / f"{event_type}.json").is_file(), event_type


def test_every_event_type_travels_on_a_topic(catalog: TopicCatalog) -> None:
    homeless = [t for t in EVENT_TYPES if not catalog.topics_carrying(t)]
    assert homeless == []


def test_every_consumed_topic_has_a_dead_letter_topic(catalog: TopicCatalog) -> None:
    names = set(catalog.names())
    for topic in catalog.topics:
        if topic.stage_consumers:
            assert topic.dead_letter == dead_letter_topic(topic.name), topic.name
            assert topic.dead_letter in names
            dlq = catalog.get(topic.dead_letter)
            assert dlq.partitions == topic.partitions
            assert set(dlq.producers) == set(topic.stage_consumers)
            assert dlq.retention_ms >= topic.retention_ms or topic.retention_ms == FOREVER


def test_every_stage_reads_and_writes(catalog: TopicCatalog) -> None:
    for stage in STAGE_NAMES:
        assert catalog.inputs_of(stage), f"{stage} consumes nothing"
        assert catalog.outputs_of(stage), f"{stage} produces nothing"


def test_partitions_and_retention(catalog: TopicCatalog) -> None:
    for topic in catalog.topics:
        if topic.key == "order_id" or topic.name == "inventory.updates.v1":
            assert topic.partitions == 6, topic.name
    assert 1 <= catalog.get("network.updates.v1").partitions <= 3
    assert catalog.get("oms.orders.v1").retention_ms == parse_retention("7d")


def test_format_catalog_lists_every_topic(catalog: TopicCatalog) -> None:
    table = format_catalog(catalog)
    for name in catalog.names():
        assert name in table
    assert table.splitlines()[0].split() == [
        "NAME",
        "PARTS",
        "KEY",
        "PRODUCERS",
        "CONSUMERS",
        "RETENTION",
        "SCHEMAS",
    ]
    assert "order.created.v1" in table and "forever" in table and "30d" in table


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("7d", 604_800_000),
        ("36h", 129_600_000),
        ("90m", 5_400_000),
        ("3600s", 3_600_000),
        ("500ms", 500),
        ("2w", 1_209_600_000),
        (86400000, 86_400_000),
        ("86400000", 86_400_000),
        ("forever", -1),
        (-1, -1),
    ],
)
def test_parse_retention(text: object, ms: int) -> None:
    assert parse_retention(text) == ms


@pytest.mark.parametrize("text", ["", "7 days", "0d", 0, -5, True, "1y", None, 1.5])
def test_parse_retention_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="retention"):
        parse_retention(text)


def test_format_retention() -> None:
    assert [format_retention(ms) for ms in (604_800_000, 129_600_000, 90_000, 1500, -1)] == [
        "7d",
        "36h",
        "90s",
        "1500ms",
        "forever",
    ]


# ---------------------------------------------------------------------------
# Bad catalogs say what is wrong, in which file, on which topic
# ---------------------------------------------------------------------------

_GOOD_TOPIC = """\
  - name: oms.orders.v1
    partitions: 6
    key: order_id
    schemas: [order.created.v1]
    producers: [external:oms]
    consumers: [ingest]
    dead_letter: oms.orders.v1.dlq
"""


def _load(tmp_path: Path, body: str) -> TopicCatalog:
    path = tmp_path / "topics.yaml"
    path.write_text(body, encoding="utf-8")
    return load_catalog(path)


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(CatalogError) as info:
        _load(tmp_path, body)
    message = str(info.value)
    assert str(tmp_path / "topics.yaml") in message, message
    return message


def test_minimal_catalog_loads(tmp_path: Path) -> None:
    catalog = _load(tmp_path, "defaults: {retention: 3d}\ntopics:\n" + _GOOD_TOPIC)
    assert catalog.names() == ("oms.orders.v1", "oms.orders.v1.dlq")
    assert catalog.get("oms.orders.v1").retention_ms == parse_retention("3d")


@pytest.mark.parametrize(
    ("replace", "with_", "expected"),
    [
        ("[order.created.v1]", "[order.created.v1, order.teleported.v1]", "'order.teleported.v1'"),
        ("partitions: 6", "partitions: 0", "partitions"),
        (
            "dead_letter: oms.orders.v1.dlq",
            "dead_letter: oms-orders-dlq",
            "must be named 'oms.orders.v1.dlq'",
        ),
        ("    dead_letter: oms.orders.v1.dlq\n", "", "consumed by ingest but has no dead_letter"),
        ("[ingest]", "[order-taker]", "'order-taker': not a stage"),
        ("key: order_id", "key: sku", "carries order.created.v1 (keyed by order_id)"),
        ("partitions: 6", "partitions: 6\n    retention: 7 days", "retention"),
        ("partitions: 6", "partitions: 6\n    partitons: 6", "partitons"),
        ("partitions: 6", "partitions: 6\n    config: {retention.ms: 1000}", "retention:"),
        ("partitions: 6", "partitions: 6\n    config: {cleanup.policy: shred}", "cleanup.policy"),
        ("    producers: [external:oms]\n", "", "producers"),
        ("partitions: 6", "partitions: 6\n    readers: [reserve]", "'reserve': not a service (promise)"),
    ],
)
def test_bad_topic_is_named_in_the_error(tmp_path: Path, replace: str, with_: str, expected: str) -> None:
    assert replace in _GOOD_TOPIC
    message = _error(tmp_path, "topics:\n" + _GOOD_TOPIC.replace(replace, with_))
    assert "topic 'oms.orders.v1'" in message, message
    assert expected in message, message


def test_duplicate_topic_names(tmp_path: Path) -> None:
    message = _error(tmp_path, "topics:\n" + _GOOD_TOPIC + _GOOD_TOPIC)
    assert "topic 'oms.orders.v1': declared more than once" in message


def test_declared_dead_letter_topic(tmp_path: Path) -> None:
    dlq = "  - {name: oms.orders.v1.dlq, partitions: 6, key: order_id, producers: [ingest]}\n"
    message = _error(tmp_path, "topics:\n" + _GOOD_TOPIC + dlq)
    assert "topic 'oms.orders.v1.dlq'" in message and "not declared on their own" in message


def test_dead_letter_without_a_stage_consumer(tmp_path: Path) -> None:
    message = _error(tmp_path, "topics:\n" + _GOOD_TOPIC.replace("[ingest]", "[external:bi]"))
    assert "no stage consumes it" in message


def test_unnamed_topic_is_named_by_position(tmp_path: Path) -> None:
    message = _error(
        tmp_path, "topics:\n" + _GOOD_TOPIC + "  - {partitions: 1, key: sku, producers: [ingest]}\n"
    )
    assert "topics[1]: name: Field required" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("topics: [\n", "not valid YAML"),
        ("- a\n- b\n", "mapping with a `topics` list"),
        ("topics: []\n", "non-empty list"),
        ("topic:\n" + _GOOD_TOPIC, "unknown top-level key(s) topic"),
        ("defaults: {retention: soon}\ntopics:\n" + _GOOD_TOPIC, "defaults.retention"),
        ("dead_letters: {retention: 0d}\ntopics:\n" + _GOOD_TOPIC, "dead_letters.retention"),
        ("topics:\n  - just a string\n", "topics[0]: expected a mapping"),
    ],
)
def test_bad_files(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _error(tmp_path, body)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "absent.yaml")


def test_catalog_built_in_code_is_checked_too() -> None:
    spec = TopicSpec(
        name="a.v1", partitions=1, key="order_id", producers=("external:x",), consumers=("ingest",)
    )
    with pytest.raises(ValueError, match="has no dead_letter"):
        TopicCatalog(topics=(spec,))


# ---------------------------------------------------------------------------
# Applying to a real broker
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(bootstrap: str) -> str:
    """The suite's broker (KAFKA_BOOTSTRAP_SERVERS, testcontainers or the local one: see conftest)."""
    return bootstrap


def _renamed(catalog: TopicCatalog, prefix: str) -> TopicCatalog:
    """The catalog with every topic renamed under `prefix`, so tests share no topic with anything."""
    topics = tuple(
        t.model_copy(
            update={
                "name": prefix + t.name,
                "dead_letter": prefix + t.dead_letter if t.dead_letter else None,
            }
        )
        for t in catalog.topics
    )
    return TopicCatalog(topics=topics, dead_letter_retention_ms=catalog.dead_letter_retention_ms)


@pytest.fixture
async def prefix(kafka: str) -> AsyncIterator[str]:
    value = f"test.{uuid.uuid4().hex[:10]}."
    yield value
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(value)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


@pytest.mark.integration
async def test_apply_creates_then_reports_unchanged(kafka: str, prefix: str, catalog: TopicCatalog) -> None:
    ours = _renamed(catalog, prefix)
    first = await apply_topics(kafka, ours)
    assert sorted(first.created) == sorted(ours.names())
    assert first.in_sync, first.render()
    assert "created" in first.render()

    second = await apply_topics(kafka, ours)
    assert second.created == [] and second.grown == []
    assert second.differences == [], second.render()
    assert sorted(second.unchanged) == sorted(ours.names())
    assert "in sync" in second.render()


@pytest.mark.integration
async def test_apply_reports_differences_and_grows_only_when_asked(kafka: str, prefix: str) -> None:
    orders = TopicSpec(
        name=prefix + "orders.v1",
        partitions=6,
        key="order_id",
        schemas=("order.created.v1",),
        producers=("external:oms",),
        consumers=("ingest",),
        dead_letter=prefix + "orders.v1.dlq",
    )
    network = TopicSpec(
        name=prefix + "network.v1",
        partitions=1,
        key="node_id",
        producers=("external:network-admin",),
        retention="forever",
    )
    ours = TopicCatalog(topics=(orders, network))
    # Someone created the orders topic by hand with too few partitions and a
    # short retention; network with another cleanup policy.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(orders.name, 2, 1, topic_configs={"retention.ms": "3600000"}),
                NewTopic(
                    network.name, 1, 1, topic_configs={"retention.ms": "-1", "cleanup.policy": "compact"}
                ),
            ]
        )
    finally:
        await admin.close()

    report = await apply_topics(kafka, ours)
    assert report.created == [orders.dead_letter]
    assert not report.in_sync
    text = "\n".join(report.differences)
    assert f"{orders.name}: has 2 partitions, the catalog says 6" in text
    assert f"{orders.name}: retention.ms is '3600000', the catalog says '604800000'" in text
    assert f"{network.name}: cleanup.policy is 'compact', the catalog says 'delete'" in text
    assert report.render().count("DIFFERS") == 3

    grown = await apply_topics(kafka, ours, grow_partitions=True)
    assert grown.grown == [f"{orders.name}: 2 -> 6 partitions"]
    assert not any("partitions" in d for d in grown.differences)
    assert len(grown.differences) == 2  # configs are reported, never changed
    assert (await apply_topics(kafka, ours)).unchanged == [orders.dead_letter]
