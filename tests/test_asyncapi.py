"""asyncapi.yaml: every topic, party and event of the catalog is in it, its payloads are the
committed JSON Schemas, the committed file is current, and the official AsyncAPI parser accepts it.

No Kafka or PostgreSQL here: the document is built from files only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.asyncapi import (
    CLOUDEVENTS_HEADERS,
    DEAD_LETTER_HEADERS,
    DEAD_LETTER_MESSAGE,
    AsyncApiError,
    asyncapi_document,
    render_document,
)
from orchestrator.cli import main as cli
from orchestrator.contract.envelope import Envelope, encode
from orchestrator.contract.examples import example
from orchestrator.runtime.dead_letter import dead_letter
from orchestrator.topics import STAGE_NAMES, TopicCatalog, TopicSpec, load_catalog

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "schemas"
COMMITTED = REPO / "asyncapi.yaml"
TOOLS = REPO / "tools" / "asyncapi"
INSTALL_HINT = "run `make asyncapi-tools` (or `.ci/install-node-tools`) to install the AsyncAPI parser"


@pytest.fixture(scope="module")
def catalog() -> TopicCatalog:
    return load_catalog(REPO / "topics.yaml")


@pytest.fixture(scope="module")
def document(catalog: TopicCatalog) -> dict[str, Any]:
    return asyncapi_document(catalog, SCHEMA_DIR)


def _event_types(catalog: TopicCatalog) -> list[str]:
    return sorted({t for spec in catalog.topics for t in spec.schemas})


def _as_in_file(schema: Any) -> Any:
    """Undo the document's rewriting: references back into `$defs`, the discriminator back to its name."""
    text = json.dumps(schema).replace('"#/components/schemas/', '"#/$defs/')
    return json.loads(text.replace('"x-discriminator":', '"discriminator":'))


def _party(party: str) -> str:
    return party.replace(":", "-")


def _messages(spec: TopicSpec) -> list[str]:
    return [DEAD_LETTER_MESSAGE] if spec.is_dead_letter else list(spec.schemas)


# --------------------------------------------------------------------------- channels


def test_every_topic_is_a_channel_with_its_partitions_retention_and_events(
    catalog: TopicCatalog, document: dict[str, Any]
) -> None:
    channels = document["channels"]
    assert list(channels) == list(catalog.names())
    for spec in catalog.all_topics():
        channel = channels[spec.name]
        assert channel["address"] == spec.name
        assert channel["description"].startswith(spec.description)
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == spec.partitions
        assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_ms
        # Compacted where the catalog says so (the queues' latest word per SKU), else deleted by age.
        policy = spec.config.get("cleanup.policy", "delete").split(",")
        assert kafka["topicConfiguration"]["cleanup.policy"] == policy
        assert list(channel["messages"]) == _messages(spec), spec.name
        for name, ref in channel["messages"].items():
            assert ref == {"$ref": f"#/components/messages/{name}"}


def test_dead_letter_topics_are_channels_of_dead_letters(
    catalog: TopicCatalog, document: dict[str, Any]
) -> None:
    dead_letter_topics = [s for s in catalog.all_topics() if s.is_dead_letter]
    assert dead_letter_topics, "the catalog declares dead-letter topics"
    assert {s.dead_letter for s in catalog.topics if s.dead_letter} == {s.name for s in dead_letter_topics}
    message = document["components"]["messages"][DEAD_LETTER_MESSAGE]
    assert message["headers"] == {"$ref": f"#/components/schemas/{DEAD_LETTER_HEADERS}"}
    assert message["contentType"] == "application/octet-stream"
    assert "key" in message["bindings"]["kafka"]


# --------------------------------------------------------------------------- messages and schemas


def test_every_event_type_is_a_message_whose_payload_is_its_json_schema(
    catalog: TopicCatalog, document: dict[str, Any]
) -> None:
    components = document["components"]
    event_types = _event_types(catalog)
    assert set(components["messages"]) == {*event_types, DEAD_LETTER_MESSAGE}
    for event_type in event_types:
        message = components["messages"][event_type]
        assert message["name"] == event_type
        assert message["contentType"] == "application/json"
        assert message["payload"] == {"$ref": f"#/components/schemas/{event_type}"}
        assert message["headers"]["allOf"] == [{"$ref": f"#/components/schemas/{CLOUDEVENTS_HEADERS}"}]
        assert message["headers"]["properties"]["ce_type"]["const"] == event_type
        assert message["bindings"]["kafka"]["key"]["type"] == "string"

        in_file = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text(encoding="utf-8"))
        defs = in_file.pop("$defs", {})
        # The standalone file's dialect and id; inside the document they would be wrong.
        del in_file["$schema"], in_file["$id"]
        assert _as_in_file(components["schemas"][event_type]) == in_file, event_type
        for name, definition in defs.items():
            assert _as_in_file(components["schemas"][name]) == definition, f"{event_type}: $defs/{name}"


def test_every_example_event_is_valid_under_draft_07_and_a_broken_one_is_not(
    catalog: TopicCatalog, document: dict[str, Any]
) -> None:
    # AsyncAPI's schema format is draft-07 based: the rewritten schemas must still accept real events
    # under draft-07 rules (where a `$ref` hides its siblings) and still reject wrong ones.
    for t in _event_types(catalog):
        schema = {"$ref": f"#/components/schemas/{t}", "components": document["components"]}
        validator = jsonschema.Draft7Validator(schema)
        event = example(t).model_dump(mode="json")
        assert not list(validator.iter_errors(event)), t
        required = document["components"]["schemas"][t]["required"]
        broken = {k: v for k, v in event.items() if k != required[0]}
        assert list(validator.iter_errors(broken)), f"{t} without {required[0]} passed"


def test_the_documented_headers_are_the_ones_the_runtime_writes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    first = Envelope.new(example("order.created.v1"), source="external:oms")
    caused = first.child(example("order.ingested.v1"), source="ingest", index=0)
    _, _, headers = encode(caused)
    cloudevents = schemas[CLOUDEVENTS_HEADERS]
    assert {name for name, _ in headers} == set(cloudevents["properties"])
    assert set(cloudevents["required"]) <= {name for name, _ in encode(first)[2]}

    @dataclass
    class Record:
        topic: str = "oms.orders.v1"
        partition: int = 3
        offset: int = 42
        timestamp: int = 1_700_000_000_000
        key: bytes | None = b"ORD-1"
        value: bytes | None = b"{}"
        headers: list[tuple[str, bytes]] = field(default_factory=lambda: list(headers))

    letter = dead_letter(
        Record(), stage="ingest", category="schema", reason="no", now=datetime(2025, 1, 1, tzinfo=UTC)
    )
    added = {name for name, _ in letter.headers[len(headers) :]}
    documented = schemas[DEAD_LETTER_HEADERS]
    assert added <= set(documented["properties"])
    assert set(documented["required"]) <= added
    assert {n for n in documented["properties"] if n != "dlq_value_truncated"} <= added


# --------------------------------------------------------------------------- operations


def test_every_producer_sends_and_every_consumer_and_observer_receives(
    catalog: TopicCatalog, document: dict[str, Any]
) -> None:
    operations = document["operations"]
    expected: set[str] = set()
    for spec in catalog.all_topics():
        channel = {"$ref": f"#/channels/{spec.name}"}
        messages = [{"$ref": f"#/channels/{spec.name}/messages/{m}"} for m in _messages(spec)]
        for party in spec.producers:
            name = f"{_party(party)}.send.{spec.name}"
            expected.add(name)
            assert operations[name]["action"] == "send"
            assert operations[name]["channel"] == channel
            assert operations[name]["messages"] == messages
        for party in (*spec.consumers, *spec.observers, *spec.readers):
            name = f"{_party(party)}.receive.{spec.name}"
            expected.add(name)
            assert operations[name]["action"] == "receive"
            assert operations[name]["channel"] == channel
            if party in STAGE_NAMES:
                assert party in operations[name]["description"]
                group = operations[name]["bindings"]["kafka"]["groupId"]["const"]
                assert group == f"orchestrator.{party}"
    assert set(operations) == expected
    stages_in_document = {name.split(".", 1)[0] for name in operations}
    assert set(STAGE_NAMES) <= stages_in_document


# --------------------------------------------------------------------------- sources that disagree


def test_a_missing_schema_file_or_two_different_defs_of_one_name_is_an_error(
    catalog: TopicCatalog, tmp_path: Path
) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "order.created.v1.json").unlink()
    with pytest.raises(AsyncApiError, match=r"no schema for order\.created\.v1"):
        asyncapi_document(catalog, tmp_path)

    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "order.ingested.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["$defs"]["Address"]["description"] = "another address"
    path.write_text(json.dumps(schema), encoding="utf-8")
    with pytest.raises(AsyncApiError, match=r"\$defs/Address differs"):
        asyncapi_document(catalog, tmp_path)


def test_values_that_look_like_references_are_data_and_left_alone(
    catalog: TopicCatalog, tmp_path: Path
) -> None:
    shutil.copytree(SCHEMA_DIR, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "order.cancelled.v1.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    prop = next(iter(schema["properties"]))
    schema["properties"][prop]["examples"] = [{"$ref": "#/$defs/NotAReference"}]
    path.write_text(json.dumps(schema), encoding="utf-8")
    rendered = asyncapi_document(catalog, tmp_path)["components"]["schemas"]["order.cancelled.v1"]
    assert rendered["properties"][prop]["examples"] == [{"$ref": "#/$defs/NotAReference"}]


# --------------------------------------------------------------------------- the committed file, the command


def test_the_committed_asyncapi_yaml_is_up_to_date(document: dict[str, Any]) -> None:
    assert COMMITTED.exists(), "asyncapi.yaml is missing: run `orchestrator asyncapi` and commit it"
    assert COMMITTED.read_text(encoding="utf-8") == render_document(document), (
        "asyncapi.yaml is out of date with topics.yaml or schemas/: run `orchestrator asyncapi` and commit it"
    )
    assert yaml.safe_load(COMMITTED.read_text(encoding="utf-8")) == json.loads(json.dumps(document))


def test_the_command_writes_prints_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topics = ["--file", str(REPO / "topics.yaml"), "--schemas", str(SCHEMA_DIR)]
    out = tmp_path / "asyncapi.yaml"
    assert cli(["asyncapi", *topics, "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().out
    assert cli(["asyncapi", *topics, "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    assert cli(["asyncapi", *topics, "--out", str(out), "--check"]) == 0
    capsys.readouterr()
    assert cli(["asyncapi", *topics, "--out", "-"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the official parser


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: install Node.js 20 or later, then {INSTALL_HINT}")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(f"tools/asyncapi/node_modules is missing: {INSTALL_HINT}")
    return subprocess.run(
        [node, str(TOOLS / "validate.mjs"), str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_the_official_asyncapi_parser_accepts_the_document() -> None:
    result = _validate(COMMITTED)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error ")]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_the_parser_check_is_not_vacuous(tmp_path: Path) -> None:
    # A dangling reference, as a wrong rewrite of `$defs` would leave: the validator must say so.
    broken = tmp_path / "broken.yaml"
    text = COMMITTED.read_text(encoding="utf-8")
    target = "'#/components/schemas/Address'"
    assert target in text
    broken.write_text(text.replace(target, "'#/components/schemas/NoSuchSchema'", 1), encoding="utf-8")
    result = _validate(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "NoSuchSchema" in result.stderr
