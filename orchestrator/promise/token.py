"""The promise token: what was promised, carried by the order itself, and the check decide-node makes.

A token is the promised shipments in compact JSON, base64url-encoded: the
promise service stores nothing per request, and decide-node needs no lookup
to compare. A token is not an authority: decide-node never follows it, it
only says whether the plan it made matches it and, when not, why.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from datetime import date, datetime

import orjson
from pydantic import ValidationError

from orchestrator.contract.common import ContractModel, Identifier
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided

#: Longest token the order contract accepts; a cart's plan is far smaller.
MAX_TOKEN_CHARS = 4000
#: An explanation sentence is contract `Text`: at most this long.
MAX_SENTENCE = 2000


class TokenShipment(ContractModel):
    node: Identifier
    service: Identifier
    date: date
    units: tuple[tuple[Identifier, int], ...]  # (sku, quantity)


class PromiseToken(ContractModel):
    at: datetime
    policy: Identifier
    shipments: tuple[TokenShipment, ...]


def encode_token(plan: PlanDecided, quoted_at: datetime) -> str | None:
    """The token of a plan quoted at `quoted_at` (None when nothing ships)."""
    if not plan.shipments:
        return None
    # Written as `PromiseToken` writes itself, without validating what a validated plan gives.
    token = {
        "at": quoted_at,
        "policy": plan.policy_version,
        "shipments": [
            {
                "node": s.node_id,
                "service": s.carrier.service_id,
                "date": s.promised_delivery_date,
                "units": [(line.sku, line.quantity) for line in s.lines],
            }
            for s in plan.shipments
        ],
    }
    return base64.urlsafe_b64encode(orjson.dumps(token, option=orjson.OPT_UTC_Z)).decode().rstrip("=")


def decode_token(raw: str) -> PromiseToken:
    """The token's content; ValueError with the reason when it is not one."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return PromiseToken.model_validate(data)
    except (binascii.Error, orjson.JSONDecodeError, ValidationError, ValueError) as exc:
        raise ValueError(f"not a promise token: {exc}") from exc


def _placed(units: list[tuple[str, str, int]]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for node_id, sku, quantity in units:
        out[(node_id, sku)] += quantity
    return out


def promise_sentence(plan: PlanDecided, raw: str) -> str:
    """One sentence for the plan's explanation: it is what was promised, or how and why it differs."""
    try:
        token = decode_token(raw)
    except ValueError:
        return "The order carries a promise token that cannot be read, so the plan was not compared with it."
    at = token.at.strftime("%Y-%m-%d %H:%M UTC")
    promised = _placed([(s.node, sku, q) for s in token.shipments for sku, q in s.units])
    planned = _placed([(s.node_id, line.sku, line.quantity) for s in plan.shipments for line in s.lines])
    promised_by = max(s.date for s in token.shipments)
    planned_by = max((s.promised_delivery_date for s in plan.shipments), default=None)
    services = {(s.node, s.service) for s in token.shipments}
    planned_services = {(s.node_id, s.carrier.service_id) for s in plan.shipments}
    if promised == planned and services == planned_services and planned_by == promised_by:
        return f"As promised at {at}: the same nodes, carrier services and delivery date ({promised_by})."
    differences: list[str] = []
    for node_id, sku in sorted(set(promised) - set(planned)):
        why = _why_not(plan, node_id, sku)
        differences.append(f"{node_id} was to send {promised[(node_id, sku)]} of {sku}: {why}")
    if promised == planned and services != planned_services:
        differences.append(
            "the carrier service changed ("
            + ", ".join(f"{n} {s}" for n, s in sorted(services))
            + " promised, "
            + ", ".join(f"{n} {s}" for n, s in sorted(planned_services))
            + " now)"
        )
    if planned_by != promised_by:
        now = "nothing ships now" if planned_by is None else f"delivers by {planned_by}"
        differences.append(f"it was to deliver by {promised_by} and {now}")
    if token.policy != plan.policy_version:
        differences.append(f"the policy changed from {token.policy} to {plan.policy_version}")
    if not differences:
        differences.append("the same nodes now carry the units in other shipments")
    return f"Differs from the promise made at {at}: " + "; ".join(differences) + "."


def _why_not(plan: PlanDecided, node_id: str, sku: str) -> str:
    for cand in plan.candidates:
        if cand.node_id != node_id:
            continue
        reasons = [r for r in cand.reasons if sku in r.message] or list(cand.reasons)
        if reasons:
            return "; ".join(r.message for r in reasons[:2])
        return "it still could, but another plan costs less now"
    return "it is no longer in the network"


def with_promise_check(plan: PlanDecided, order: OrderCreated) -> PlanDecided:
    """`plan` with the sentence comparing it to the promise the order carries, if it carries one."""
    if order.promise_token is None:
        return plan
    sentence = promise_sentence(plan, order.promise_token)[:MAX_SENTENCE]
    return plan.model_copy(update={"explanation": (*plan.explanation, sentence)})


__all__ = [
    "MAX_TOKEN_CHARS",
    "PromiseToken",
    "decode_token",
    "encode_token",
    "promise_sentence",
    "with_promise_check",
]
