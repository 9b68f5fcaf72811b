"""Automatic additions: lines the routing policy adds to an order (a free sample for a
customer tier, gift wrap, a mandatory insert with hazardous goods, packaging for
fragile items). Pure: validate asks `add_lines` what to add, decide-node asks
`place_additions` where the added lines ship.

Two rules keep an addition from ever costing the customer anything:

- It is computed from the customer's lines only, every time the order is
  validated, from the order as the OMS sent it (ingest never stores an
  addition). An amendment therefore re-adds, never duplicates: one line per
  rule, with the id `add-<rule>`. An added line never triggers another rule.
- It never holds up or splits the customer's order. decide-node plans the
  customer's lines alone; each added line then rides along, whole, on one of
  the shipments already planned (one that carries the lines it is for, when it
  is for some), at a node with the stock to spare. When no such shipment has
  the stock, the addition is left out of the plan, with the reason in its
  explanation: it is never back-ordered and never makes a shipment of its own.
  A plan that ships nothing keeps the additions on the order, so a later plan
  of the whole order (a ship-complete order whose stock came) places them;
  lines planned piecemeal later (back-orders, pre-orders) go without.
  The shipment keeps the carrier and price chosen for the customer's lines (a
  sample or an insert weighs next to nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, field_validator

from orchestrator.contract.common import (
    Amount,
    Channel,
    CustomerTier,
    DeliveryMethod,
    Identifier,
    NodeKind,
    OrderLine,
    PolicyAddition,
    ProductLabel,
    SkuLine,
    Text,
    WeightKg,
)
from orchestrator.contract.orders import OrderCreated
from orchestrator.contract.pipeline import PlanDecided, PlannedShipment
from orchestrator.domain.network import NetworkView

#: Free units per (node, SKU), as decide-node reads them from reserve's ledger.
Stock = Mapping[tuple[str, str], int]

#: Prefix of the id of every added line; the rule's name follows.
LINE_ID_PREFIX = "add-"

#: Labels that decide which node and carrier may take a line: an addition rides along in a parcel
#: planned for the customer's lines, so it must not need a different node or carrier.
_ROUTING_LABELS = frozenset({ProductLabel.HAZMAT, ProductLabel.OVERSIZE})

#: Longest summary of an order's additions: it shares a status detail (2000 characters) with a reason.
_MAX_SUMMARY = 1500
#: Longest sentence of a plan's explanation (the contract's Text).
_MAX_SENTENCE = 2000
#: Between a SKU and its units in a plan's sentences, as the decision engine writes them.
_TIMES = "\u00d7"

_RuleName = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Per(StrEnum):
    """What the quantity of an addition counts."""

    #: `quantity` units for the whole order.
    ORDER = "order"
    #: `quantity` units for every unit of the matching lines (every line, when the rule names none).
    UNIT = "unit"


class AdditionConditions(_Config):
    """When a rule adds its line. Every condition given must hold; a list holds when the order (or,
    for `labels` and `skus`, one of its lines) is any of its values. No condition: every order."""

    customer_tiers: tuple[CustomerTier, ...] = Field(
        default=(), description="The customer is of one of these tiers."
    )
    channels: tuple[Channel, ...] = Field(
        default=(), description="The order was placed on one of these channels."
    )
    delivery_methods: tuple[DeliveryMethod, ...] = Field(
        default=(), description="The customer chose one of these delivery methods."
    )
    order_total_at_least: Decimal | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="The order total is at least this, in the order's currency (as holds.order_value_over).",
    )
    labels: tuple[ProductLabel, ...] = Field(
        default=(), description="A line carries one of these handling labels (it ships with such a line)."
    )
    skus: tuple[Identifier, ...] = Field(
        default=(), description="A line is one of these SKUs (it ships with it)."
    )

    @property
    def about_lines(self) -> bool:
        """True when the rule is about some lines (it ships with them), not the order as a whole."""
        return bool(self.labels or self.skus)

    def matches_line(self, line: OrderLine) -> bool:
        if self.labels and not any(label in line.labels for label in self.labels):
            return False
        return not self.skus or line.sku in self.skus

    def matches_order(self, order: OrderCreated) -> bool:
        if self.customer_tiers and order.customer_tier not in self.customer_tiers:
            return False
        if self.channels and order.channel not in self.channels:
            return False
        if self.delivery_methods and order.delivery.method not in self.delivery_methods:
            return False
        return self.order_total_at_least is None or order.order_total >= self.order_total_at_least


class AddedItem(_Config):
    """The line a rule adds."""

    sku: Identifier = Field(description="The SKU added (it must be in the ledger to ship).")
    quantity: PositiveInt = Field(default=1, description="Units added, per order or per matching unit.")
    per: Per = Field(default=Per.ORDER, description="`order`: `quantity` in all; `unit`: per matching unit.")
    unit_price: Amount = Field(default=Decimal(0), description="Price of one unit (0: free).")
    unit_weight_kg: WeightKg | None = Field(default=None, description="Weight of one unit in kg, if known.")
    labels: tuple[ProductLabel, ...] = Field(
        default=(), description="Handling labels for the node (fragile...); never hazmat or oversize."
    )

    @field_validator("labels")
    @classmethod
    def _rides_along(cls, v: tuple[ProductLabel, ...]) -> tuple[ProductLabel, ...]:
        routing = sorted(label.value for label in v if label in _ROUTING_LABELS)
        if routing:
            raise ValueError(
                f"an addition cannot be {' or '.join(routing)}: it ships in a parcel planned for the "
                "customer's lines, and these labels decide the node and carrier"
            )
        if len(set(v)) != len(v):
            raise ValueError("labels must not repeat")
        return v


class AdditionRule(_Config):
    """A policy rule that adds a line to the orders it applies to."""

    name: _RuleName = Field(
        description="Unique name (lower case, digits, `-`); the added line's id is `add-<name>`."
    )
    reason: Text = Field(description="Why the line is added, a sentence for people (explain, timeline).")
    when: AdditionConditions = Field(
        default_factory=AdditionConditions, description="When the rule applies (nothing given: always)."
    )
    add: AddedItem = Field(description="The line added.")

    @property
    def line_id(self) -> str:
        return f"{LINE_ID_PREFIX}{self.name}"


def unique_rule_names(rules: tuple[AdditionRule, ...]) -> tuple[AdditionRule, ...]:
    """`rules`, or raise naming the repeated names (two rules would add lines with the same id)."""
    names = [rule.name for rule in rules]
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ValueError(f"rule names must not repeat: {', '.join(dupes)}")
    return rules


# ---------------------------------------------------------------------------
# validate: which lines to add
# ---------------------------------------------------------------------------


def is_addition(line: OrderLine) -> bool:
    return line.addition is not None


def customer_lines(order: OrderCreated) -> tuple[OrderLine, ...]:
    """The lines the customer ordered (the order without its policy additions)."""
    return tuple(line for line in order.lines if not is_addition(line))


def customer_order(order: OrderCreated) -> OrderCreated:
    """The order as the customer placed it, without its policy additions (the same object when it has
    none). An order of additions alone (a repair of an added line) has no customer order: ValueError."""
    lines = customer_lines(order)
    if len(lines) == len(order.lines):
        return order
    if not lines:
        raise ValueError(
            f"order {order.order_id}: only policy additions are left to plan; they never ship on their own"
        )
    return order.model_copy(update={"lines": lines})


@dataclass(frozen=True, slots=True)
class AddedLines:
    """What the policy adds to an order."""

    #: The customer's lines followed by the added ones.
    order: OrderCreated
    added: tuple[OrderLine, ...]
    #: Rules that applied but could not add their line, each with why.
    skipped: tuple[str, ...] = ()

    def summary(self) -> str | None:
        """The additions in words, for the timeline; None when there are none."""
        parts = [f"policy added {_line_words(line)}: {_reason(line)}" for line in self.added]
        # It travels as a status detail, which the contract caps; many long reasons must not break it.
        return _fit(" ".join([*parts, *self.skipped]), _MAX_SUMMARY) or None


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _line_words(line: OrderLine | SkuLine, times: str = "x") -> str:
    return f"{line.line_id} ({line.sku} {times}{line.quantity})"


def _reason(line: OrderLine) -> str:
    return line.addition.reason if line.addition is not None else "ordered by the customer"


def _added_line(rule: AdditionRule, matching: Sequence[OrderLine]) -> OrderLine:
    item = rule.add
    units = item.quantity * (sum(line.quantity for line in matching) if item.per is Per.UNIT else 1)
    return OrderLine(
        line_id=rule.line_id,
        sku=item.sku,
        quantity=units,
        unit_price=item.unit_price,
        unit_weight_kg=item.unit_weight_kg,
        labels=item.labels,
        addition=PolicyAddition(
            rule=rule.name,
            reason=rule.reason,
            for_lines=tuple(line.line_id for line in matching) if rule.when.about_lines else (),
        ),
    )


def add_lines(order: OrderCreated, rules: Iterable[AdditionRule]) -> AddedLines:
    """The order with a line for every rule that applies to the customer's lines, in rule order.

    Any addition already on the order is replaced, so adding twice gives what adding once does.
    """
    mine = customer_lines(order)
    taken = {line.line_id for line in mine}
    added: list[OrderLine] = []
    skipped: list[str] = []
    for rule in rules:
        if not rule.when.matches_order(order):
            continue
        matching = [line for line in mine if rule.when.matches_line(line)]
        if rule.when.about_lines and not matching:
            continue
        if rule.line_id in taken:
            # The OMS chose the same id for a line of its own: the customer's line wins.
            skipped.append(f"policy rule {rule.name} skipped: the order already has a line {rule.line_id}.")
            continue
        added.append(_added_line(rule, matching or mine))
    if not added and len(mine) == len(order.lines):
        return AddedLines(order, (), tuple(skipped))
    return AddedLines(order.model_copy(update={"lines": (*mine, *added)}), tuple(added), tuple(skipped))


# ---------------------------------------------------------------------------
# decide-node: where the added lines ship
# ---------------------------------------------------------------------------


def _units_of(shipment: PlannedShipment, line_ids: Iterable[str]) -> int:
    wanted = set(line_ids)
    return sum(line.quantity for line in shipment.lines if line.line_id in wanted)


def _riding_candidates(plan: PlanDecided, addition: PolicyAddition) -> list[int]:
    """Indexes of the shipments the added line may ride on, in order of preference: those carrying the
    most units of the lines it is for (any shipment when it is for the whole order), then plan order."""
    indexes = range(len(plan.shipments))
    if not addition.for_lines:
        return list(indexes)
    carrying = [i for i in indexes if _units_of(plan.shipments[i], addition.for_lines) > 0]
    return sorted(carrying, key=lambda i: -_units_of(plan.shipments[i], addition.for_lines))


def _takes_additions(network: NetworkView, node_id: str) -> bool:
    # A drop-ship vendor sends its own lines and nothing else.
    node = network.nodes.get(node_id)
    return node is not None and node.kind is not NodeKind.DROP_SHIP_VENDOR


def _left_out(line: OrderLine, addition: PolicyAddition, why: str) -> str:
    return _fit(
        f"Added line {_line_words(line, _TIMES)} is left out: {why}; an addition never waits for stock or "
        f"makes a shipment of its own (policy rule {addition.rule}).",
        _MAX_SENTENCE,
    )


def place_additions(
    plan: PlanDecided, order: OrderCreated, *, stock: Stock, network: NetworkView
) -> PlanDecided:
    """`plan` (of the customer's lines of `order`) with each added line of `order` riding along on one of
    its shipments, or left out; the plan's order becomes `order` and each addition gets a sentence."""
    additions = [(line, line.addition) for line in order.lines if line.addition is not None]
    if not additions:
        return plan
    if not plan.shipments:
        # Nothing ships now: the additions stay on the order, so a later plan of the whole order (a
        # ship-complete order whose stock came) places them, and the plan's sentences stay about why
        # the order waits.
        return plan.model_copy(update={"order": order})
    shipments = list(plan.shipments)
    used: Counter[tuple[str, str]] = Counter()
    for shipment in shipments:
        for item in shipment.lines:
            used[(shipment.node_id, item.sku)] += item.quantity

    def spare(i: int, sku: str) -> int:
        key = (shipments[i].node_id, sku)
        return stock.get(key, 0) - used[key]

    sentences: list[str] = []
    for line, addition in additions:
        them = f"line(s) {', '.join(addition.for_lines)}" if addition.for_lines else "the order"
        candidates = _riding_candidates(plan, addition)
        open_to_it = [i for i in candidates if _takes_additions(network, shipments[i].node_id)]
        chosen = next((i for i in open_to_it if spare(i, line.sku) >= line.quantity), None)
        if chosen is None:
            if not candidates:
                why = f"{them}, which it goes with, do not ship in this plan"
            elif not open_to_it:
                why = f"only drop-ship vendors ship {them}, and they send nothing but their own lines"
            else:
                nodes = ", ".join(dict.fromkeys(shipments[i].node_id for i in open_to_it))
                why = f"no node shipping {them} ({nodes}) has {line.quantity} {line.sku} to spare"
            sentences.append(_left_out(line, addition, why))
            continue
        shipment = shipments[chosen]
        used[(shipment.node_id, line.sku)] += line.quantity
        riding = SkuLine(line_id=line.line_id, sku=line.sku, quantity=line.quantity)
        shipments[chosen] = shipment.model_copy(update={"lines": (*shipment.lines, riding)})
        sentences.append(
            _fit(
                f"Added line {_line_words(line, _TIMES)} ships from {shipment.node_id}"
                f" in shipment {chosen + 1} (policy rule {addition.rule}: {addition.reason})",
                _MAX_SENTENCE,
            )
        )
    return plan.model_copy(
        update={"order": order, "shipments": tuple(shipments), "explanation": (*plan.explanation, *sentences)}
    )


def placed_additions(plan: PlanDecided) -> tuple[SkuLine, ...]:
    """The added lines the plan ships, in shipment order."""
    added = {line.line_id for line in plan.order.lines if is_addition(line)}
    return tuple(item for shipment in plan.shipments for item in shipment.lines if item.line_id in added)


def additions_phrase(plan: PlanDecided) -> str:
    """What became of the order's additions in this plan, for the timeline ('' when it has none)."""
    added = [line for line in plan.order.lines if is_addition(line)]
    if not added:
        return ""
    if not plan.shipments:
        return "additions wait with the order: " + ", ".join(_line_words(x) for x in added)
    shipped = {item.line_id for item in placed_additions(plan)}
    parts = []
    if shipped:
        parts.append(
            "additions shipping: " + ", ".join(_line_words(x) for x in added if x.line_id in shipped)
        )
    left = [x for x in added if x.line_id not in shipped]
    if left:
        parts.append("additions left out: " + ", ".join(_line_words(x) for x in left))
    return "; ".join(parts)


__all__ = [
    "LINE_ID_PREFIX",
    "AddedItem",
    "AddedLines",
    "AdditionConditions",
    "AdditionRule",
    "Per",
    "Stock",
    "add_lines",
    "additions_phrase",
    "customer_lines",
    "customer_order",
    "is_addition",
    "place_additions",
    "placed_additions",
    "unique_rule_names",
]
