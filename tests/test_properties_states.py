"""Property: the order state machine never makes an illegal transition.

status-sync decides which stage reports become transitions the OMS hears about
(`orchestrator.stages.status_sync.is_transition`, by the table in
`orchestrator.domain.order_states`). Fed any sequence of reports, in any order, repeated or
not, what it forwards must be legal: nothing after a terminal state (no exception: returns and
exchanges have states of their own), `received` only ever first, from `received` only validate's
verdicts, never a state after itself. Fed the stories the stages really tell (causally ordered:
validate before decide-node, reserve after a plan, shipping reports computed by the monitor's own
`order_transitions`), it must forward exactly what status-sync forwarded before the table existed,
so making the rule explicit changed nothing the OMS sees. Last, the same fold through
`apply_status` on PostgreSQL numbers and stores the same transitions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import pairwise

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.contract.common import TERMINAL_STATES, OrderState
from orchestrator.contract.pipeline import StageStatus
from orchestrator.domain.monitoring import (
    MILESTONES,
    OPEN_STATES,
    RANK,
    WITH_CARRIER,
    ShipmentState,
    order_transitions,
)
from orchestrator.domain.order_states import LEGAL_TRANSITIONS, VALIDATE_VERDICTS, is_legal, next_state
from orchestrator.stages.status_sync import apply_status, is_transition

S = OrderState
Transition = tuple[OrderState | None, OrderState]
T0 = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)
states = st.sampled_from(list(OrderState))


def fold(reports: list[OrderState]) -> list[Transition]:
    """What status-sync forwards for the reports, in order: (before, after) per transition."""
    current: OrderState | None = None
    out: list[Transition] = []
    for report in reports:
        if is_transition(current, report):
            out.append((current, report))
            current = report
    return out


def fold_before_the_table(reports: list[OrderState]) -> list[Transition]:
    """status-sync's rule until the table existed: anything new, unless the order had ended."""
    current: OrderState | None = None
    out: list[Transition] = []
    for report in reports:
        if current is None or (report is not current and current not in TERMINAL_STATES):
            out.append((current, report))
            current = report
    return out


# ------------------------------------------------------------------------------------------ the table


def test_the_table_has_a_row_for_every_state_and_no_way_out_of_the_end() -> None:
    assert set(LEGAL_TRANSITIONS) == {None, *OrderState}
    for state in TERMINAL_STATES:
        assert LEGAL_TRANSITIONS[state] == frozenset(), state
    for before, after in LEGAL_TRANSITIONS.items():
        assert before not in after, f"{before} follows itself"
        if before is not None:
            assert S.RECEIVED not in after, f"{before} goes back to received"
    assert LEGAL_TRANSITIONS[S.RECEIVED] == VALIDATE_VERDICTS


def test_every_state_is_reachable_and_every_open_state_can_still_end() -> None:
    """Nothing lost, as a property of the table: no state is a dead end short of the terminal ones."""

    def reachable(start: OrderState | None) -> set[OrderState]:
        seen: set[OrderState] = set()
        todo = list(LEGAL_TRANSITIONS[start])
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(LEGAL_TRANSITIONS[s])
        return seen

    assert reachable(S.RECEIVED) == set(OrderState) - {S.RECEIVED}
    for state in set(OrderState) - TERMINAL_STATES:
        assert reachable(state) >= TERMINAL_STATES, state


# ------------------------------------------------------------------------------- any sequence of reports


@settings(max_examples=300, deadline=None)
@given(st.lists(states, max_size=40))
def test_no_sequence_of_reports_makes_an_illegal_transition(reports: list[OrderState]) -> None:
    forwarded = fold(reports)
    for before, after in forwarded:
        assert is_legal(before, after), (before, after)
        assert next_state(before, after) is after
    for (_, after), (before, _) in pairwise(forwarded):
        assert after is before, "each transition starts where the previous one ended"
        assert after not in TERMINAL_STATES, f"left {after}"
    assert [after for _, after in forwarded].count(S.RECEIVED) <= 1
    if S.RECEIVED in [after for _, after in forwarded]:
        assert forwarded[0][1] is S.RECEIVED, "received only ever comes first"
    # Whatever came after the end was dropped: the end is the last word.
    ended = [i for i, (_, after) in enumerate(forwarded) if after in TERMINAL_STATES]
    assert ended in ([], [len(forwarded) - 1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(states, st.integers(1, 3)), max_size=25))
def test_a_report_delivered_again_is_no_second_transition(reports: list[tuple[OrderState, int]]) -> None:
    once = [state for state, _ in reports]
    redelivered = [state for state, times in reports for _ in range(times)]
    assert fold(redelivered) == fold(once)


# -------------------------------------------------------------------------------- stories the stages tell


@st.composite
def stories(draw: st.DrawFn) -> list[OrderState]:
    """The reports one order's stages make, in an order causality allows.

    Ingest reports `received`, then validate its verdict; after that the OMS may amend, release a
    hold or cancel at any time, decide-node plans once validate passed the order, reserve and
    release follow a plan, reserve re-dates waiting lines, the exceptions stage speaks once work is
    out, and the monitor reports what `order_transitions` makes of its work orders' moves.
    """
    reports = [S.RECEIVED, draw(st.sampled_from(sorted(VALIDATE_VERDICTS)))]
    validated = reports[-1] is S.VALIDATED
    planned = decided = reserved = False
    work: list[ShipmentState] = []
    for _ in range(draw(st.integers(0, 30))):
        steps = ["amend", "hold_released", "cancel"]
        steps += ["decide"] if validated else []
        steps += ["reserve"] if planned else []
        steps += ["release"] if reserved else []
        steps += ["tell_date", "waiting_released"] if decided else []
        steps += ["exception", "carrier"] if work else []
        step = draw(st.sampled_from(steps))
        if step == "amend":
            reports.append(draw(st.sampled_from([S.VALIDATED, S.ON_HOLD, S.REJECTED])))
            validated = validated or reports[-1] is S.VALIDATED
        elif step == "hold_released":
            reports.append(S.VALIDATED)
            validated = True
        elif step == "cancel":
            reports.append(S.CANCELLED)
        elif step == "decide":
            reports.append(draw(st.sampled_from([S.PLANNED, S.ON_HOLD, S.BACK_ORDERED, S.NEEDS_ATTENTION])))
            decided = True
            planned = planned or reports[-1] is S.PLANNED
        elif step == "reserve":
            reports.append(S.RESERVED)
            reserved = True
        elif step in ("release", "waiting_released"):
            reports.append(S.RELEASED)
            work.append(ShipmentState.RELEASED)
        elif step == "tell_date":
            reports.append(draw(st.sampled_from([S.BACK_ORDERED, S.ON_HOLD])))
        elif step == "exception":
            reports.append(draw(st.sampled_from([S.NEEDS_ATTENTION, S.BACK_ORDERED])))
        else:
            i = draw(st.integers(0, len(work) - 1))
            now = work[i]
            moves = [m for m in MILESTONES if now in RANK and RANK[m] > RANK[now]]
            moves += [ShipmentState.REJECTED, ShipmentState.NODE_CANCELLED] if now in OPEN_STATES else []
            moves += [ShipmentState.LOST] if now in WITH_CARRIER else []
            if not moves:
                continue
            before = list(work)
            work[i] = draw(st.sampled_from(moves))
            reports.extend(order_transitions(before, work))
    return reports


@settings(max_examples=300, deadline=None)
@given(stories())
def test_the_stories_stages_tell_are_forwarded_as_before(reports: list[OrderState]) -> None:
    forwarded = fold(reports)
    assert forwarded == fold_before_the_table(reports)
    assert forwarded[0] == (None, S.RECEIVED)
    assert all(is_legal(before, after) for before, after in forwarded)


# --------------------------------------------------------------------------- the same on PostgreSQL


@pytest.fixture(scope="module")
def pg(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(database_url))
    try:
        yield loop, conn
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


@pytest.mark.integration
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(states, min_size=1, max_size=15))
def test_apply_status_on_postgres_numbers_the_same_transitions(
    pg: tuple[asyncio.AbstractEventLoop, asyncpg.Connection], reports: list[OrderState]
) -> None:
    loop, conn = pg
    order_id = f"ORD-PROP-{uuid.uuid4().hex[:10]}"

    async def run() -> tuple[list[Transition], asyncpg.Record | None]:
        tx = conn.transaction()
        await tx.start()
        try:
            out: list[Transition] = []
            for state in reports:
                report = StageStatus(order_id=order_id, state=state, stage="test", sequence=1, occurred_at=T0)
                moved = await apply_status(conn, report)
                if moved is not None:
                    previous, sequence = moved
                    assert sequence == len(out) + 1, "transitions are numbered 1, 2, 3... without gaps"
                    out.append((previous, state))
            row = await conn.fetchrow(
                "SELECT state, sequence FROM status_orders WHERE order_id = $1", order_id
            )
            return out, row
        finally:
            await tx.rollback()

    stored, row = loop.run_until_complete(run())
    assert stored == fold(reports)
    assert row is not None and (OrderState(row["state"]), row["sequence"]) == (stored[-1][1], len(stored))
