"""Which order state may follow which: the one table status-sync checks before it tells the OMS.

Status reports come from many stages, and several of them can speak about one
order at any time: an amendment re-validates and re-plans an order whose
old work order is still moving, the monitor reports shipping progress while
the exceptions stage back-orders a short pick, reserve re-dates waiting lines
whenever stock moves. So after validation the order may go from any
non-final state to any other; the table does not pretend otherwise. What it
does promise:

- `received` is only ever the first state: ingest reports it once, when the
  order is created, and nothing can send an order back there;
- from `received` only validate's verdicts follow (validated, on hold,
  rejected, cancelled): no stage sees an order before validate has passed it
  on, so anything else would be a report out of causal order;
- the terminal states (delivered, cancelled, rejected) are never left. Not
  even for a return or an exchange: those have their own states
  (`return.status_changed.v1`), and an exchange's replacement shipment is
  the return's story, not a way back into the order's;
- a state does not follow itself: a repeated report is not a transition.

The first report status-sync sees of an order may be any state (`None` row):
status-sync may start after orders began, or fold from an event store a test
or a migration filled, and the OMS is better told where an order stands than
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.contract.common import OrderState

S = OrderState

#: What validate can say about an order it has just received.
VALIDATE_VERDICTS: frozenset[OrderState] = frozenset({S.VALIDATED, S.ON_HOLD, S.REJECTED, S.CANCELLED})

#: Every state an order can be in once validate has passed it on.
_AFTER_VALIDATION: frozenset[OrderState] = frozenset(OrderState) - {S.RECEIVED}


def _from(state: OrderState) -> frozenset[OrderState]:
    return _AFTER_VALIDATION - {state}


#: The legal transitions: state before (None: status-sync knows nothing of the order yet) → states after.
LEGAL_TRANSITIONS: Mapping[OrderState | None, frozenset[OrderState]] = {
    None: frozenset(OrderState),
    S.RECEIVED: VALIDATE_VERDICTS,
    # Planning: decide-node, reserve and release move it on; an amendment or a cancellation can
    # come at any point, and so can a shipping report of a work order released before an amendment.
    S.VALIDATED: _from(S.VALIDATED),
    S.ON_HOLD: _from(S.ON_HOLD),
    S.PLANNED: _from(S.PLANNED),
    S.RESERVED: _from(S.RESERVED),
    S.BACK_ORDERED: _from(S.BACK_ORDERED),
    S.NEEDS_ATTENTION: _from(S.NEEDS_ATTENTION),
    # Execution: a replacement work order (re-route, waiting lines released) takes a shipped order
    # back to released or partially shipped; back-orders and exceptions can follow any shipment.
    S.RELEASED: _from(S.RELEASED),
    S.PARTIALLY_SHIPPED: _from(S.PARTIALLY_SHIPPED),
    S.SHIPPED: _from(S.SHIPPED),
    # The end.
    S.DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}


def is_legal(before: OrderState | None, after: OrderState) -> bool:
    """Whether an order in `before` (None: not seen yet) may move to `after`."""
    return after in LEGAL_TRANSITIONS[before]


def next_state(current: OrderState | None, reported: OrderState) -> OrderState | None:
    """The state an order moves to when a stage reports `reported`; None: not a transition (a repeat,
    a report after the order ended, or one out of causal order), so the OMS hears nothing."""
    return reported if is_legal(current, reported) else None


__all__ = ["LEGAL_TRANSITIONS", "VALIDATE_VERDICTS", "is_legal", "next_state"]
