"""Exception playbooks: the file (default, errors, durations) and the pure core that walks them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.contract.common import HomeDelivery, ServiceLevel, SkuLine, StorePickup
from orchestrator.contract.examples import example
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.status import ExceptionKind, ExceptionRaised, NotificationKind
from orchestrator.domain.exception_handling import (
    EXHAUSTED,
    Attempt,
    NotApplicable,
    affected_lines,
    backorder_repair,
    build_redecide,
    build_repair,
    exhausted_reason,
    new_delivery_date,
    next_action,
    options_notification,
    refund_notification,
    refund_reason,
)
from orchestrator.domain.playbooks import (
    PLAYBOOKS_FILE_ENV,
    Limits,
    PlaybookAction,
    PlaybookError,
    Playbooks,
    load_playbooks,
    parse_duration,
)

A = PlaybookAction
PACKAGED = Path(__file__).resolve().parents[1] / "orchestrator" / "policies" / "playbooks.yaml"
MISSING = [{"line_id": "2", "sku": "SKU-MUG-SET4", "quantity": 1}]


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLAYBOOKS_FILE_ENV, raising=False)


def packaged_data() -> dict[str, Any]:
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "playbooks.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def exception(kind: ExceptionKind, **fields: Any) -> ExceptionRaised:
    base: dict[str, Any] = {
        "exception_id": f"EXC-{kind.value}",
        "order_id": "ORD-1",
        "kind": kind,
        "node_id": "DC-A",
        "work_order_id": "WO-1",
        "shipment_id": "SH-1",
        "detail": f"{kind.value} at DC-A",
        "raised_at": datetime(2025, 3, 10, 9, tzinfo=UTC),
        "unfilled": MISSING,
    }
    return ExceptionRaised.model_validate({**base, **fields})


def order(delivery: str = "standard") -> OrderCreated:
    o = example("order.created.v1")
    assert isinstance(o, OrderCreated)
    return o.model_copy(update={"delivery": HomeDelivery.model_validate({"kind": delivery})})


# ------------------------------------------------------------------------------------- the file


def test_the_default_playbooks_load() -> None:
    book = load_playbooks()
    assert book.version == "playbooks-2"
    assert book.timers.collection_within == timedelta(days=7)
    assert book.timers.acknowledge_within == timedelta(minutes=30)
    assert book.timers.carrier_scan_within == timedelta(hours=24)
    assert book.limits == Limits(max_extra_cost=15.0, max_delay_days=2)
    assert book.max_attempts_per_action == 1
    assert book.actions_for(ExceptionKind.SHORT_PICK) == (A.REROUTE, A.OFFER_OPTIONS)
    assert book.actions_for(ExceptionKind.NODE_CLOSED) == (A.REROUTE, A.BACKORDER)
    assert book.actions_for(ExceptionKind.NOT_SHIPPED_BY_CUTOFF) == (A.REBOOK_FASTER, A.NOTIFY_NEW_DATE)
    assert book.actions_for(ExceptionKind.LOST_PARCEL) == (A.REROUTE, A.CANCEL_LINE_REFUND)
    assert book.actions_for(ExceptionKind.CARRIER_EXCEPTION) == (A.HOLD_FOR_REVIEW,)


def test_every_kind_of_exception_has_a_playbook() -> None:
    book = load_playbooks()
    for kind in ExceptionKind:
        assert book.actions_for(kind), kind


def test_the_packaged_file_sets_every_field_and_every_field_is_documented() -> None:
    assert set(packaged_data()) == set(Playbooks.model_fields)
    for name, info in Playbooks.model_fields.items():
        assert info.description, f"Playbooks.{name} has no description"


def test_the_environment_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = packaged_data()
    data["version"] = "mine-2"
    monkeypatch.setenv(PLAYBOOKS_FILE_ENV, str(write(tmp_path, data)))
    assert load_playbooks().version == "mine-2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        ("5s", timedelta(seconds=5)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 45s ", timedelta(seconds=45)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["30", "", "m", "30 minutes", "0s", "-5m", "1.5h", 30])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_a_file_sets_its_own_timers(tmp_path: Path) -> None:
    data = packaged_data()
    data["timers"] = {"acknowledge_within": "5s", "carrier_scan_within": "1h30m"}
    book = load_playbooks(write(tmp_path, data))
    assert book.timers.acknowledge_within == timedelta(seconds=5)
    assert book.timers.carrier_scan_within == timedelta(minutes=90)


def _broken(tmp_path: Path, change: dict[str, Any]) -> str:
    data = packaged_data()
    for dotted, value in change.items():
        *path, last = dotted.split(".")
        target = data
        for part in path:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    file = write(tmp_path, data)
    with pytest.raises(PlaybookError) as info:
        load_playbooks(file)
    message = str(info.value)
    assert str(file) in message, "the error names the file"
    return message


def test_a_kind_without_a_playbook_is_named(tmp_path: Path) -> None:
    message = _broken(tmp_path, {"playbooks.lost_parcel": None, "playbooks.carrier_delay": None})
    assert "playbooks" in message and "missing" in message
    assert "lost_parcel" in message and "carrier_delay" in message


def test_an_unknown_action_is_named_with_its_place(tmp_path: Path) -> None:
    message = _broken(tmp_path, {"playbooks.short_pick": ["reroute", "teleport"]})
    assert "playbooks.short_pick.1" in message and "reroute" in message


def test_an_unknown_kind_is_named(tmp_path: Path) -> None:
    assert "alien_abduction" in _broken(tmp_path, {"playbooks.alien_abduction": ["reroute"]})


def test_an_empty_or_repeating_playbook_is_refused(tmp_path: Path) -> None:
    assert "short_pick: a playbook needs at least one action" in _broken(
        tmp_path, {"playbooks.short_pick": []}
    )
    assert "reroute listed twice" in _broken(tmp_path, {"playbooks.short_pick": ["reroute", "reroute"]})


def test_bad_timers_and_limits_name_their_field(tmp_path: Path) -> None:
    assert "timers.acknowledge_within" in _broken(tmp_path, {"timers.acknowledge_within": "30"})
    assert "limits.max_extra_cost" in _broken(tmp_path, {"limits.max_extra_cost": -1})
    assert "limits.max_delay_days" in _broken(tmp_path, {"limits.max_delay_days": "soon"})
    assert "max_attempts_per_action" in _broken(tmp_path, {"max_attempts_per_action": 0})
    assert "timers.tea_break" in _broken(tmp_path, {"timers.tea_break": "5m"})


def test_unreadable_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match=r"nowhere\.yaml: cannot be read"):
        load_playbooks(tmp_path / "nowhere.yaml")
    with pytest.raises(PlaybookError, match="not valid YAML"):
        load_playbooks(write(tmp_path, "playbooks: [unclosed\n"))
    with pytest.raises(PlaybookError, match="mapping of fields"):
        load_playbooks(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(PlaybookError, match="version: Field required"):
        load_playbooks(write(tmp_path, "playbooks: {}\n"))


# ------------------------------------------------------------------------------- the pure core


def test_actions_are_picked_in_order_until_the_playbook_is_exhausted() -> None:
    book = load_playbooks()
    exc = exception(ExceptionKind.SHORT_PICK)
    assert next_action(exc, [], book) is A.REROUTE
    assert next_action(exc, [(A.REROUTE, False)], book) is A.OFFER_OPTIONS
    assert next_action(exc, [("reroute", False), ("offer_options", False)], book) == EXHAUSTED


def test_an_action_is_repeated_up_to_max_attempts() -> None:
    book = load_playbooks().model_copy(update={"max_attempts_per_action": 2})
    exc = exception(ExceptionKind.NODE_CLOSED)
    tried: list[tuple[PlaybookAction | str, bool]] = []
    picked = []
    while (action := next_action(exc, tried, book)) != EXHAUSTED:
        picked.append(action)
        tried.append((action, False))
    assert picked == [A.REROUTE, A.REROUTE, A.BACKORDER, A.BACKORDER]


def test_there_is_no_next_action_after_a_success() -> None:
    with pytest.raises(ValueError, match="already resolved"):
        next_action(exception(ExceptionKind.SHORT_PICK), [(A.REROUTE, True)], load_playbooks())


def test_a_short_pick_reroute_keeps_the_work_order_and_excludes_the_node() -> None:
    limits = Limits(max_extra_cost=9.5, max_delay_days=1)
    request = build_redecide(exception(ExceptionKind.SHORT_PICK), A.REROUTE, order(), 3, limits)
    repair = request.repair
    assert repair is not None
    assert request.sequence == 3 and request.attempt == 1
    assert request.excluded_nodes == ("DC-A",)
    assert request.reason.code == "short_pick"
    assert [line.model_dump() for line in repair.lines] == MISSING
    assert repair.cancel_replaced is False, "the picked units still ship"
    assert repair.replaces_work_order_id == "WO-1" and repair.replaces_shipment_id == "SH-1"
    assert repair.only_nodes == () and repair.min_service_level is None
    assert (repair.max_extra_cost, repair.max_delay_days) == (9.5, 1)
    assert repair.exception_id == "EXC-short_pick" and repair.action == "reroute"


@pytest.mark.parametrize(
    "kind", [ExceptionKind.NODE_CLOSED, ExceptionKind.NODE_REJECTED, ExceptionKind.LOST_PARCEL]
)
def test_other_kinds_cancel_the_failing_work_order(kind: ExceptionKind) -> None:
    request = build_redecide(exception(kind), A.REROUTE, order(), 1, Limits())
    assert request.repair is not None and request.repair.cancel_replaced is True
    assert request.excluded_nodes == ("DC-A",)


@pytest.mark.parametrize("kind", sorted(set(ExceptionKind) - {ExceptionKind.VALIDATION_FAILED}))
def test_a_repair_of_work_the_node_was_asked_to_stop_is_dropped_if_it_ships_anyway(
    kind: ExceptionKind,
) -> None:
    """Reserve drops such a repair when the failing shipment left after all (its lines would ship
    twice); a repair of a parcel that went wrong, or of a short pick's missing units, must stand."""
    repair = build_repair(exception(kind), A.REROUTE, order(), Limits(), work_order_lines=LINES)
    stands = kind in (
        ExceptionKind.SHORT_PICK,
        ExceptionKind.NO_CARRIER_SCAN,
        ExceptionKind.CARRIER_DELAY,
        ExceptionKind.CARRIER_EXCEPTION,
        ExceptionKind.LOST_PARCEL,
    )
    assert repair.dropped_if_shipped is not stands


LINES = [SkuLine(line_id="2", sku="SKU-MUG-SET4", quantity=1)]


@pytest.mark.parametrize("kind", [ExceptionKind.NODE_CLOSED, ExceptionKind.NOT_ACKNOWLEDGED])
def test_a_back_order_of_work_the_node_was_asked_to_stop_names_that_work(kind: ExceptionKind) -> None:
    repair = backorder_repair(exception(kind), tuple(LINES))
    assert repair.action == "release_waiting" and repair.lines == tuple(LINES)
    assert (repair.replaces_work_order_id, repair.replaces_shipment_id) == ("WO-1", "SH-1")
    assert repair.cancel_replaced and repair.dropped_if_shipped


@pytest.mark.parametrize("kind", [ExceptionKind.SHORT_PICK, ExceptionKind.LOST_PARCEL])
def test_a_back_order_of_missing_or_lost_units_leaves_the_shipment_alone(kind: ExceptionKind) -> None:
    repair = backorder_repair(exception(kind), tuple(LINES))
    assert (repair.replaces_work_order_id, repair.replaces_shipment_id) == (None, None)
    assert not repair.cancel_replaced and not repair.dropped_if_shipped


def test_split_asks_the_same_as_reroute_under_its_own_name() -> None:
    exc = exception(ExceptionKind.NODE_CANCELLED)
    reroute = build_repair(exc, A.REROUTE, order(), Limits())
    split = build_repair(exc, A.SPLIT, order(), Limits())
    assert split.action == "split"
    assert split.model_copy(update={"action": "reroute"}) == reroute


def test_rebook_stays_at_the_node_and_asks_for_a_faster_level() -> None:
    exc = exception(ExceptionKind.NOT_SHIPPED_BY_CUTOFF)
    request = build_redecide(exc, A.REBOOK_FASTER, order("standard"), 1, Limits())
    assert request.repair is not None
    assert request.repair.only_nodes == ("DC-A",)
    assert request.repair.min_service_level is ServiceLevel.EXPRESS
    assert request.repair.cancel_replaced is True
    assert request.excluded_nodes == (), "the node is the one place a re-booking may use"
    express = build_repair(exc, A.REBOOK_FASTER, order("express"), Limits())
    assert express.min_service_level is ServiceLevel.NEXT_DAY
    with pytest.raises(NotApplicable, match="nothing faster"):
        build_repair(exc, A.REBOOK_FASTER, order("next_day"), Limits())


def test_rebook_is_not_applicable_once_shipped_or_without_a_node() -> None:
    with pytest.raises(NotApplicable, match="left the node"):
        build_repair(exception(ExceptionKind.CARRIER_DELAY), A.REBOOK_FASTER, order(), Limits())
    with pytest.raises(NotApplicable, match="no node"):
        build_repair(
            exception(ExceptionKind.PROMISE_AT_RISK, node_id=None), A.REBOOK_FASTER, order(), Limits()
        )


def test_rebook_is_not_applicable_where_the_customer_collects() -> None:
    missed = exception(ExceptionKind.NOT_SHIPPED_BY_CUTOFF, node_id="STORE-A")
    collect = order().model_copy(update={"delivery": StorePickup(kind="bopis", pickup_store_id="STORE-A")})
    with pytest.raises(NotApplicable, match="collects at this store"):
        build_repair(missed, A.REBOOK_FASTER, collect, Limits())
    # Goods sent to the pickup store from elsewhere go by carrier: that shipment can be re-booked.
    transfer = exception(ExceptionKind.NOT_SHIPPED_BY_CUTOFF, node_id="DC-A")
    assert build_repair(transfer, A.REBOOK_FASTER, collect, Limits()).only_nodes == ("DC-A",)
    # With nothing to re-book, the playbook goes on to tell the customer the new date.
    assert next_action(missed, [(A.REBOOK_FASTER, False)], load_playbooks()) is A.NOTIFY_NEW_DATE


def test_lines_come_from_the_work_order_when_the_exception_gives_none() -> None:
    wo_lines = (SkuLine(line_id="1", sku="K", quantity=1), SkuLine(line_id="2", sku="M", quantity=2))
    closed = exception(ExceptionKind.NODE_CLOSED, unfilled=[])
    assert affected_lines(closed, wo_lines) == wo_lines
    assert affected_lines(exception(ExceptionKind.LOST_PARCEL, unfilled=[], line_ids=["2"]), wo_lines) == (
        wo_lines[1],
    )
    # A short pick without a stated shortfall cannot be guessed: the node ships what it found.
    short = exception(ExceptionKind.SHORT_PICK, unfilled=[])
    assert affected_lines(short, wo_lines) == ()
    with pytest.raises(NotApplicable, match="no quantity"):
        build_repair(short, A.REROUTE, order(), Limits(), work_order_lines=wo_lines)


def test_customer_messages_and_reasons() -> None:
    o = order()
    lines = exception(ExceptionKind.SHORT_PICK).unfilled
    offer = options_notification(o, lines)
    assert offer.kind is NotificationKind.OPTIONS_OFFERED and offer.customer_id == o.customer_id
    assert offer.options is not None
    assert {opt.option_id for opt in offer.options} == {"ship_rest_later", "refund_missing"}
    refund = refund_notification(o, lines)
    assert refund.kind is NotificationKind.REFUND_ISSUED and "SKU-MUG-SET4" in refund.message
    reason = refund_reason(lines)
    assert reason.code == "refund_line" and "line(s) 2" in reason.message


def test_the_new_date_is_the_estimate_else_the_last_repair_promise() -> None:
    delay = exception(ExceptionKind.CARRIER_DELAY, new_estimate="2025-03-14")
    assert new_delivery_date(delay, []) == date(2025, 3, 14)
    late = exception(ExceptionKind.PROMISE_AT_RISK)
    assert new_delivery_date(late, []) is None
    tried = [Attempt(A.REBOOK_FASTER, False, "too dear", date(2025, 3, 13))]
    assert new_delivery_date(late, tried) == date(2025, 3, 13)


def test_attempts_round_trip_and_the_exhausted_reason_says_what_was_tried() -> None:
    attempts = [
        Attempt(A.REROUTE, False, "no node has it", date(2025, 3, 12)),
        Attempt(A.BACKORDER, False, "not today"),
    ]
    assert [Attempt.from_json(a.to_json()) for a in attempts] == attempts
    reason = exhausted_reason(ExceptionKind.NODE_CLOSED, attempts)
    assert reason == (
        "no playbook action could resolve node_closed: reroute failed (no node has it); "
        "backorder failed (not today)"
    )
