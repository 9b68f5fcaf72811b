"""decide-node's batch reads count each plan the batch makes toward its nodes' days, so a later order
of the same batch is decided on the count as it will be, not as it was read."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.contract.common import NodeKind, Weekday
from orchestrator.contract.examples import example
from orchestrator.contract.network import NodeUpserted
from orchestrator.contract.pipeline import DayCapacity, PlanDecided
from orchestrator.domain.network import SHIP_DAY_SEARCH_DAYS, ship_day
from orchestrator.stages.decide_reads import DecideReads, around

PLAN = example("plan.decided.v1")
assert isinstance(PLAN, PlanDecided)
DAY = date(2025, 3, 10)
NODE = example("network.node_upserted.v1")
assert isinstance(NODE, NodeUpserted)
#: The zones furthest from UTC either way, and some between.
ZONES = (
    "Etc/GMT+12",
    "Pacific/Pago_Pago",
    "America/Los_Angeles",
    "UTC",
    "Europe/London",
    "Asia/Tokyo",
    "Pacific/Auckland",
    "Pacific/Kiritimati",
    "Etc/GMT-14",
)


def test_a_plan_the_batch_makes_counts_on_its_nodes_day() -> None:
    [shipment] = PLAN.shipments
    assert shipment.capacity == DayCapacity(day=DAY, shipments=400)
    reads = DecideReads(load_day=DAY, load={(shipment.node_id, DAY): 399})
    reads.planned(PLAN)
    assert reads.load == {(shipment.node_id, DAY): 400}
    # A plan from before shipments carried their day counts on the UTC date of its decision.
    tomorrow = shipment.model_copy(update={"capacity": None})
    later = PLAN.model_copy(update={"shipments": (tomorrow,), "decided_at": PLAN.decided_at.replace(day=11)})
    reads.planned(later)
    assert reads.load[(shipment.node_id, date(2025, 3, 11))] == 1
    # A plan with nothing to ship takes no slot.
    reads.planned(PLAN.model_copy(update={"shipments": ()}))
    assert sum(reads.load.values()) == 401


@settings(max_examples=500, deadline=None)
@given(
    day=st.dates(min_value=date(2025, 3, 10), max_value=date(2025, 3, 16)),  # a whole week
    zone=st.sampled_from(ZONES),
    cutoff=st.times(),
    kind=st.sampled_from((NodeKind.DC, NodeKind.STORE, NodeKind.DROP_SHIP_VENDOR)),
    moment=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1) - timedelta(microseconds=1)),
    # Holidays from none to every day of three weeks (past the search's reach).
    holidays=st.sets(st.integers(min_value=-1, max_value=20)),
    # The node's days of the week: its kind's (None), or any.
    week=st.none() | st.sets(st.sampled_from(list(Weekday)), min_size=1),
)
def test_the_load_is_read_for_every_date_a_shipment_can_leave_on(
    day: date,
    zone: str,
    cutoff: time,
    kind: NodeKind,
    moment: timedelta,
    holidays: set[int],
    week: set[Weekday] | None,
) -> None:
    # Whatever the day, the node's time zone, cut-off, kind and holidays, a plan made on the UTC
    # date leaves on a date read, and on the node's first working day from its local date (from
    # the next after its cut-off): any day but a holiday for a store, Monday to Friday else.
    calendar = tuple(sorted(day + timedelta(days=d) for d in holidays))
    node = NODE.model_copy(
        update={
            "timezone": zone,
            "cutoff_local": cutoff,
            "kind": kind,
            "non_working_days": calendar,
            "working_days": None if week is None else tuple(sorted(week, key=lambda d: d.number)),
        }
    )
    at = datetime.combine(day, time(0), tzinfo=UTC) + moment
    ship_date, ship_by = ship_day(node, at)
    local = at.astimezone(ZoneInfo(zone))
    first = local.date() + timedelta(days=0 if local.time() < cutoff else 1)

    def working(d: date) -> bool:
        if week is not None:
            on_the_week = any(d.weekday() == w.number for w in week)
        else:
            on_the_week = d.weekday() < 5 or kind is NodeKind.STORE
        return on_the_week and d not in calendar

    assert local.date() in around(day) and ship_date in around(day)
    assert ship_date >= first and ship_by > at
    assert not any(working(first + timedelta(days=d)) for d in range((ship_date - first).days))
    # A calendar closing the node for longer than the search looks is the one exception.
    assert working(ship_date) or ship_date == first + timedelta(days=SHIP_DAY_SEARCH_DAYS)
