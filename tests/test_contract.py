"""The event contract: models, their examples, and the JSON Schemas generated from them."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import ValidationError

from orchestrator.contract.base import EventPayload, UnknownEventType
from orchestrator.contract.envelope import Envelope, decode, encode
from orchestrator.contract.examples import example, missing_examples
from orchestrator.contract.registry import (
    ALL_EVENT_TYPES,
    EVENT_TYPE_PATTERN,
    EVENT_TYPES,
    build_index,
    model_for,
)
from orchestrator.contract.schemas import export_schemas, render_schemas, stale_schema_files

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "schemas"
TYPES = sorted(EVENT_TYPES)


def _json(payload: EventPayload) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(orjson.dumps(payload.model_dump(mode="json")))
    return data


def _validation_message(model: type[EventPayload], data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------


def test_registry_is_complete_and_consistent() -> None:
    assert len(EVENT_TYPES) == len(ALL_EVENT_TYPES) >= 30
    for name, model in EVENT_TYPES.items():
        assert model.event_type == name
        assert EVENT_TYPE_PATTERN.fullmatch(name), name
        assert model.__doc__, f"{model.__name__} needs a docstring: integrators read it in the schema"
        for field_name, info in model.model_fields.items():
            assert info.description, f"{name}.{field_name} needs a description"
    with pytest.raises(TypeError):
        EVENT_TYPES["x.y.v1"] = EventPayload  # type: ignore[index]


def test_registry_refuses_duplicates_and_bad_names() -> None:
    with pytest.raises(ValueError, match="declared by both"):
        build_index([*ALL_EVENT_TYPES, ALL_EVENT_TYPES[0]])

    class BadName(EventPayload):
        """Not an event type name."""

        event_type = "Order.Created"
        order_id: str

    with pytest.raises(ValueError, match="not a valid event type"):
        build_index([BadName])


def test_model_for() -> None:
    assert model_for("order.created.v1") is EVENT_TYPES["order.created.v1"]
    with pytest.raises(UnknownEventType, match=r"nope\.v1"):
        model_for("nope.v1")


# ---------------------------------------------------------------------------
# Examples and round trips
# ---------------------------------------------------------------------------


def test_every_type_has_an_example() -> None:
    assert missing_examples() == []
    with pytest.raises(UnknownEventType):
        example("nope.v1")


@pytest.mark.parametrize("event_type", TYPES)
def test_round_trip_through_orjson(event_type: str) -> None:
    payload = example(event_type)
    assert type(payload).event_type == event_type
    wire = orjson.dumps(payload.model_dump(mode="json"))
    model = model_for(event_type)
    assert model.model_validate(orjson.loads(wire)) == payload
    assert model.model_validate_json(wire) == payload


@pytest.mark.parametrize("event_type", TYPES)
def test_round_trip_through_the_envelope(event_type: str) -> None:
    # The key must be the payload's subject for decode to accept it; this proves
    # every example (and subject_field) is keyed the way the topic contract says.
    payload = example(event_type)
    env = Envelope.new(payload, source="test/contract")
    key, value, headers = encode(env)
    back = decode(key, value, headers)
    assert back.data == payload
    assert back.type == event_type
    assert key.decode() == payload.subject()


def test_money_is_exact_on_the_wire() -> None:
    data = _json(example("order.created.v1"))
    assert data["order_total"] == "91.98"
    assert data["lines"][0]["unit_price"] == "49.99"
    # A JSON number is accepted on input and read exactly.
    data["order_total"] = 91.98
    assert str(model_for("order.created.v1").model_validate(data).order_total) == "91.98"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Invalid payloads are refused, naming the field
# ---------------------------------------------------------------------------


def test_negative_quantity_is_rejected() -> None:
    # Order lines accept any whole quantity on purpose (validate rejects the order with a reason);
    # a quantity that is not a whole number still breaks the schema.
    data = _json(example("order.created.v1"))
    data["lines"][1]["quantity"] = "two"
    assert "lines.1.quantity" in _validation_message(model_for("order.created.v1"), data)
    work = _json(example("workorder.released.v1"))
    work["lines"][0]["quantity"] = -2
    assert "lines.0.quantity" in _validation_message(model_for("workorder.released.v1"), work)
    snapshot = _json(example("inventory.snapshot.v1"))
    snapshot["on_hand"] = -1
    assert "on_hand" in _validation_message(model_for("inventory.snapshot.v1"), snapshot)


def test_missing_field_is_rejected() -> None:
    data = _json(example("workorder.released.v1"))
    del data["node_id"]
    message = _validation_message(model_for("workorder.released.v1"), data)
    assert "node_id" in message and "Field required" in message


def test_extra_field_is_rejected() -> None:
    data = _json(example("wms.picked.v1"))
    data["picker_name"] = "Sam"
    message = _validation_message(model_for("wms.picked.v1"), data)
    assert "picker_name" in message and "Extra inputs are not permitted" in message
    nested = _json(example("order.created.v1"))
    nested["ship_to"]["floor"] = "3"
    assert "ship_to.floor" in _validation_message(model_for("order.created.v1"), nested)


def test_naive_datetime_is_rejected() -> None:
    data = _json(example("order.created.v1"))
    data["placed_at"] = "2025-03-10T09:14:02"
    message = _validation_message(model_for("order.created.v1"), data)
    assert "placed_at" in message and "timezone" in message


def test_blank_and_whitespace_ids_are_rejected() -> None:
    data = _json(example("order.cancelled.v1"))
    data["order_id"] = "   "
    assert "order_id" in _validation_message(model_for("order.cancelled.v1"), data)
    data["order_id"] = "ORD 1"
    assert "order_id" in _validation_message(model_for("order.cancelled.v1"), data)


def test_payloads_are_frozen() -> None:
    payload = example("order.cancelled.v1")
    with pytest.raises(ValidationError):
        payload.order_id = "other"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("event_type", "change", "names"),
    [
        (
            "order.amended.v1",
            {"priority": None, "line_quantities": None},
            "ship_to, priority, line_quantities",
        ),
        ("order.created.v1", {"lines": "dup"}, "line_id must not repeat"),
        ("order.created.v1", {"currency": "gbp"}, "currency"),
        ("order.created.v1", {"delivery": {"kind": "bopis"}}, "delivery.bopis.pickup_store_id"),
        ("order.created.v1", {"delivery": {"kind": "drone"}}, "delivery"),
        ("inventory.delta.v1", {"change": 0}, "change"),
        ("network.node_upserted.v1", {"timezone": "Mars/Olympus"}, "timezone"),
        ("network.node_upserted.v1", {"cutoff_local": "17:00:00+01:00"}, "cutoff_local"),
        ("network.carrier_service_upserted.v1", {"reliability": 1.5}, "reliability"),
        ("network.carrier_outage.v1", {"ends_at": "2025-03-01T00:00:00Z"}, "ends_at"),
        ("workorder.released.v1", {"carrier": None}, "carrier is required"),
        ("workorder.released.v1", {"ship_by": "2025-03-10T14:00:00Z"}, "ship_by"),
        (
            "wms.short_picked.v1",
            {"lines": [{"line_id": "2", "sku": "S", "quantity_picked": 1, "quantity_short": 0}]},
            "quantity_short",
        ),
        ("order.status_changed.v1", {"sequence": 0}, "sequence"),
        ("customer.notification.v1", {"options": None}, "options is required"),
    ],
)
def test_business_rules_are_enforced(event_type: str, change: dict[str, Any], names: str) -> None:
    data = _json(example(event_type))
    if change.get("lines") == "dup":
        data["lines"][1]["line_id"] = data["lines"][0]["line_id"]
    else:
        data.update(change)
    assert names in _validation_message(model_for(event_type), data)


def test_subject_is_the_partition_key() -> None:
    assert example("inventory.delta.v1").subject() == "SKU-KETTLE-BLK"
    assert example("network.node_upserted.v1").subject() == "DC-LEEDS"
    assert example("network.carrier_service_upserted.v1").subject() == "dpd-next-day"
    outage = _json(example("network.carrier_outage.v1"))
    outage["service_id"] = None
    assert model_for("network.carrier_outage.v1").model_validate(outage).subject() == "dpd"
    assert example("wms.shipped.v1").subject() == "ORD-100234"


# ---------------------------------------------------------------------------
# JSON Schemas
# ---------------------------------------------------------------------------


def test_committed_schemas_match_the_models() -> None:
    stale = stale_schema_files(SCHEMA_DIR)
    assert not stale, (
        f"schemas/ is out of date with the pydantic models ({', '.join(stale)}): "
        "run `orchestrator schemas export` and commit the result"
    )
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == render_schemas(), "run `orchestrator schemas export`"


def test_render_is_deterministic_and_complete() -> None:
    first, second = render_schemas(), render_schemas()
    assert first == second
    assert sorted(first) == [f"{t}.json" for t in TYPES]
    for name, text in first.items():
        assert text.endswith("}\n") and not text.endswith("\n\n"), name
        doc = json.loads(text)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].endswith(name.removesuffix(".json"))
        assert doc["title"] == name.removesuffix(".json")
        assert doc["description"] and doc["additionalProperties"] is False
        assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_export_writes_and_removes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "order.shipped.v0.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("kept\n")
    written = export_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(render_schemas())
    assert not (tmp_path / "order.shipped.v0.json").exists()
    assert (tmp_path / "README.md").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in written}
    export_schemas(tmp_path)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")} == mtimes
    assert stale_schema_files(tmp_path) == []


def _validator(event_type: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("event_type", TYPES)
def test_schema_accepts_the_example_and_rejects_bad_ones(event_type: str) -> None:
    validator = _validator(event_type)
    payload = example(event_type)
    good = _json(payload)
    assert not list(validator.iter_errors(good)), [e.message for e in validator.iter_errors(good)]
    sparse = orjson.loads(orjson.dumps(payload.model_dump(mode="json", exclude_none=True)))
    assert not list(validator.iter_errors(sparse))

    assert list(validator.iter_errors({})), "an empty object must be rejected"
    extra = {**good, "unexpected_field": 1}
    assert any("unexpected_field" in e.message for e in validator.iter_errors(extra))
    required = validator.schema["required"]
    missing = {k: v for k, v in good.items() if k != required[0]}
    assert list(validator.iter_errors(missing)), f"{required[0]} is required"
    assert list(validator.iter_errors([good])), "an array is not an event"


def test_schema_rejects_what_pydantic_rejects() -> None:
    created = _validator("order.created.v1")
    data = _json(example("order.created.v1"))
    bad_quantity = json.loads(json.dumps(data))
    bad_quantity["lines"][0]["quantity"] = 1.5
    assert list(created.iter_errors(bad_quantity))
    bad_money = {**data, "order_total": "ninety"}
    assert list(created.iter_errors(bad_money))
    bad_delivery = {**data, "delivery": {"kind": "bopis"}}
    assert list(created.iter_errors(bad_delivery))
    amended = _validator("order.amended.v1")
    assert list(amended.iter_errors({"order_id": "ORD-1"})), "an amendment must change something"
    assert list(amended.iter_errors({"order_id": "ORD-1", "priority": None}))
    assert not list(amended.iter_errors({"order_id": "ORD-1", "priority": True}))


def test_examples_use_aware_times() -> None:
    for event_type in TYPES:
        for value in example(event_type).model_dump().values():
            if isinstance(value, datetime):
                assert value.tzinfo is not None, event_type


def test_an_output_id_is_stable_per_stage_and_distinct_between_stages() -> None:
    """A retried handler must emit the same ids (downstream deduplication), while two stages reading
    one event (monitor and reserve both hear a shipment) must not emit the same id: status-sync
    observes both outputs and would take the second for a redelivery of the first."""
    shipped = Envelope.new(example("wms.shipped.v1"), source="test/wms")
    by_monitor = shipped.child(example("order.stage_status.v1"), source="orchestrator/monitor", index=0)
    again = shipped.child(example("order.stage_status.v1"), source="orchestrator/monitor", index=0)
    by_reserve = shipped.child(example("reservation.consumed.v1"), source="orchestrator/reserve", index=0)
    assert by_monitor.id == again.id
    assert by_reserve.id != by_monitor.id
    assert by_reserve.causation_id == by_monitor.causation_id == shipped.id
