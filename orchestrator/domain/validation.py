"""The validate stage's pure core: is this order fit to route, and must it wait?

Every failed check becomes a `Reason`, and all of them are collected (an
OMS fixing an order wants the whole list, not the first problem). Holds are
separate from failures: a held order is fine, it only waits for the OMS to
release the hold.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from orchestrator.contract.common import HoldReason, NodeCapability, NodeKind, OrderLine, Reason
from orchestrator.contract.orders import OrderCreated
from orchestrator.domain.network import NetworkView
from orchestrator.domain.policy import Policy

#: Postal code formats of the countries we know; elsewhere any 2-10 letters and digits.
_POSTAL_FORMATS: dict[str, re.Pattern[str]] = {
    "GB": re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}$"),
    "IE": re.compile(r"^[A-Z][0-9][0-9W] ?[A-Z0-9]{4}$"),
    "US": re.compile(r"^[0-9]{5}(-[0-9]{4})?$"),
    "DE": re.compile(r"^[0-9]{5}$"),
    "FR": re.compile(r"^[0-9]{5}$"),
    "ES": re.compile(r"^[0-9]{5}$"),
    "IT": re.compile(r"^[0-9]{5}$"),
    "NL": re.compile(r"^[0-9]{4} ?[A-Z]{2}$"),
    "BE": re.compile(r"^[0-9]{4}$"),
    "CA": re.compile(r"^[A-Z][0-9][A-Z] ?[0-9][A-Z][0-9]$"),
}
_ANY_POSTAL = re.compile(r"^[A-Z0-9][A-Z0-9 -]{1,9}$")
#: Units one line may order. Far above any real order line, and far below what the ledger's 32-bit counts
#: hold once reservations add up, so a mistyped quantity is refused here, not by the database later.
MAX_LINE_QUANTITY = 1_000_000


@dataclass(frozen=True, slots=True)
class Validation:
    """The verdict: reasons to reject (empty: valid) and holds to wait for."""

    reasons: tuple[Reason, ...]
    holds: tuple[HoldReason, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons


def normalise_postal_code(code: str) -> str:
    """Upper case, single spaces: `sw1a  1aa` and `SW1A 1AA` are the same code."""
    return " ".join(code.upper().split())


def postal_code_valid(country: str, code: str) -> bool:
    pattern = _POSTAL_FORMATS.get(country, _ANY_POSTAL)
    return bool(pattern.match(normalise_postal_code(code)))


def stocked(line: OrderLine) -> bool:
    """Whether the ledger must know the line's SKU: a drop-ship line's SKU is its vendor's, not ours."""
    return line.drop_ship_vendor_id is None


def stocked_skus(order: OrderCreated) -> set[str]:
    """The SKUs of the order the ledger must know."""
    return {line.sku for line in order.lines if stocked(line)}


def validate_order(
    order: OrderCreated, *, network: NetworkView, known_skus: Set[str], policy: Policy, now: datetime
) -> Validation:
    reasons = [*_line_reasons(order, known_skus), *_destination_reasons(order, network, now)]
    reasons += _price_reasons(order)
    return Validation(tuple(reasons), _holds(order, policy) if not reasons else ())


def _line_reasons(order: OrderCreated, known_skus: Set[str]) -> list[Reason]:
    out: list[Reason] = []
    for line in order.lines:
        if line.quantity < 1:
            out.append(
                Reason(
                    code="non_positive_quantity",
                    message=f"line {line.line_id} ({line.sku}) has quantity {line.quantity}; "
                    "it must be at least 1",
                )
            )
        elif line.quantity > MAX_LINE_QUANTITY:
            out.append(
                Reason(
                    code="quantity_too_large",
                    message=f"line {line.line_id} ({line.sku}) has quantity {line.quantity}; "
                    f"at most {MAX_LINE_QUANTITY:,} units a line are accepted",
                )
            )
        if stocked(line) and line.sku not in known_skus:
            out.append(
                Reason(code="unknown_sku", message=f"line {line.line_id}: SKU {line.sku} is not known")
            )
        if line.addition is not None:
            # Additions are the policy's, added after validation: one from outside would dodge the rules
            # that keep them from holding up the order, and be replaced at the next re-validation.
            out.append(
                Reason(
                    code="unexpected_addition",
                    message=f"line {line.line_id} is marked as a policy addition; only the orchestrator "
                    "adds those",
                )
            )
    return out


def _destination_reasons(order: OrderCreated, network: NetworkView, now: datetime) -> list[Reason]:
    delivery = order.delivery
    if delivery.kind == "bopis":
        return _store_reasons(delivery.pickup_store_id, network, NodeCapability.BOPIS_PICKUP, "pickup")
    out: list[Reason] = []
    if delivery.kind == "ship_to_store":
        out += _store_reasons(delivery.store_id, network, NodeCapability.SHIP_TO_STORE_RECEIVE, "receiving")
        return out
    address = order.ship_to
    if address is None:
        return [
            Reason(code="missing_address", message="home delivery needs a ship-to address; none was given")
        ]
    if not postal_code_valid(address.country, address.postal_code):
        out.append(
            Reason(
                code="unroutable_postal_code",
                message=f"postal code {address.postal_code!r} is not a valid {address.country} postal code",
            )
        )
    elif not any(address.country in s.countries for s in network.services_available(now)):
        out.append(
            Reason(
                code="unroutable_postal_code",
                message=f"no active carrier service delivers to {address.country} {address.postal_code}",
            )
        )
    return out


def _store_reasons(store_id: str, network: NetworkView, needs: NodeCapability, role: str) -> list[Reason]:
    node = network.nodes.get(store_id)
    if node is None or node.kind is not NodeKind.STORE:
        return [Reason(code=f"unknown_{role}_store", message=f"{role} store {store_id} does not exist")]
    if needs not in node.capabilities:
        return [
            Reason(
                code=f"store_cannot_{'pickup' if role == 'pickup' else 'receive'}",
                message=f"store {store_id} cannot {needs.value.replace('_', ' ')}",
            )
        ]
    return []


def _price_reasons(order: OrderCreated) -> list[Reason]:
    goods = sum((Decimal(line.quantity) * line.unit_price for line in order.lines), Decimal(0))
    # The total also carries shipping and tax, so it may exceed the goods, never fall short of them.
    if order.order_total < goods:
        return [
            Reason(
                code="price_mismatch",
                message=f"order total {order.order_total} {order.currency} is less than its lines "
                f"({goods} {order.currency})",
            )
        ]
    return []


def _holds(order: OrderCreated, policy: Policy) -> tuple[HoldReason, ...]:
    honoured = {
        HoldReason.PAYMENT_PENDING: policy.holds.payment_pending,
        HoldReason.FRAUD_REVIEW: policy.holds.fraud_review,
    }
    holds = [h for h in order.holds if honoured.get(h, True)]
    threshold = policy.holds.order_value_over
    # A high-value order waits for a person, like a fraud review; the OMS releases it the same way.
    if threshold is not None and order.order_total > threshold and HoldReason.FRAUD_REVIEW not in holds:
        holds.append(HoldReason.FRAUD_REVIEW)
    return tuple(holds)
