"""The routing policy: the weights and rules of the sourcing decision, as data.

A policy is a YAML file, validated here into an immutable `Policy`. Its
`version` is recorded on every plan, so a decision can be explained (and
replayed) against the policy that made it. The package ships
`orchestrator/policies/default.yaml`; `ORCHESTRATOR_POLICY_FILE` points at
another file.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from orchestrator.contract.common import Channel, CustomerTier, NodeKind, ServiceLevel
from orchestrator.domain.additions import AdditionRule, unique_rule_names
from orchestrator.domain.learning import LearningPolicy
from orchestrator.domain.supply import PreorderRelease
from orchestrator.domain.yaml_config import load_yaml_model, parse_yaml_model

#: Environment variable naming the policy file to load instead of the packaged default.
POLICY_FILE_ENV = "ORCHESTRATOR_POLICY_FILE"

_PolicyVersion = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\S{1,128}$")]
_NodeId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\S{1,128}$")]
_Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PolicyError(ValueError):
    """A policy file that cannot be read or does not validate; the message names the file and field."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShipFromStoreRule(_Rule):
    """Whether stores with the ship-from-store capability may ship to customers, and for which channels."""

    enabled: bool = Field(default=True, description="False: stores never ship parcels to customers.")
    channels: tuple[Channel, ...] | Literal["all"] = Field(
        default="all", description="Channels whose orders stores may ship, or `all`."
    )

    def allows(self, channel: Channel) -> bool:
        return self.enabled and (self.channels == "all" or channel in self.channels)


class ChannelRule(_Rule):
    """Restrictions for the orders of one channel."""

    excluded_node_kinds: tuple[NodeKind, ...] = Field(
        default=(), description="Kinds of node that never fulfil this channel's orders."
    )


class TierRule(_Rule):
    """Service promised to one customer tier."""

    min_service_level: ServiceLevel | None = Field(
        default=None,
        description="Home deliveries of this tier use at least this service level (an upgrade, never a "
        "downgrade of what the customer chose).",
    )


class BopisRule(_Rule):
    """Buy online, pick up in store."""

    allow_transfer_to_pickup_store: bool = Field(
        default=True,
        description="True: lines the pickup store lacks are shipped to it from another node; "
        "false: they are back-ordered.",
    )


class HoldRules(_Rule):
    """Rules of the validate stage that put an order on hold before it is planned."""

    order_value_over: Decimal | None = Field(
        default=None, ge=0, description="Orders whose total exceeds this amount wait for manual review."
    )
    payment_pending: bool = Field(
        default=True, description="Honour the OMS's `payment_pending` hold (false: plan regardless)."
    )
    fraud_review: bool = Field(
        default=True, description="Honour the OMS's `fraud_review` hold (false: plan regardless)."
    )


class LookaheadPolicy(_Rule):
    """The `lookahead:` section: sourcing that prices the future (`orchestrator.domain.lookahead`).

    A unit taken from a node today is a unit a later order cannot have there. Every
    `refresh_seconds` the demand of the last `window_hours` (by region of destination and SKU)
    is scaled to the next `horizon_hours` and set against the stock on hand in a transportation
    problem per SKU; its dual prices say what one unit fewer at each node would cost the
    orders to come, and each unit a plan takes from a node costs `weight` x that price more.
    With `ship_complete_hold_cost` above 0, a second price is added for the ship-complete orders
    to come, which per-SKU prices cannot see: a unit at a node that may be the only one holding
    all of such an order costs what holding the order would, times the chance that it is needed.
    """

    enabled: bool = Field(
        default=False, description="Add the look-ahead term to the sourcing cost (false: myopic sourcing)."
    )
    weight: _Cost = Field(
        default=1.0, description="Multiplies the look-ahead price of every unit a plan takes from a node."
    )
    window_hours: Annotated[float, Field(gt=0, le=24 * 28, allow_inf_nan=False)] = Field(
        default=24.0,
        description="Recent orders this far back make the demand forecast (rate per SKU and "
        "share per region).",
    )
    horizon_hours: Annotated[float, Field(gt=0, le=24 * 56, allow_inf_nan=False)] = Field(
        default=24.0,
        description="How far ahead the forecast reaches: about the time until stock is replenished, "
        "after which today's scarcity no longer matters.",
    )
    refresh_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=300.0, description="How often the prices are computed again from recent orders and stock."
    )
    region_cell_degrees: Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)] = Field(
        default=1.0,
        description="Demand is forecast per cell of this many degrees of latitude and longitude "
        "(1.0: about 110 km north-south).",
    )
    unmet_cost: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=50.0,
        description="Cost per forecast unit the network cannot serve from its stock within the horizon "
        "(lost, or waiting for supply); set above any cost of shipping one unit, so the forecast is "
        "served wherever the stock allows.",
    )
    ship_complete_hold_cost: _Cost = Field(
        default=0.0,
        description="What one unit of a ship-complete order held for want of a node that has all of it "
        "costs, as the look-ahead weighs it (0: ship-complete orders are not protected). A unit of a "
        "SKU at a node that may be the only one able to fill a coming ship-complete order costs this x "
        "`ship_complete_lines` x the chance of that x the share of the node's units those orders want.",
    )
    ship_complete_lines: Annotated[int, Field(ge=2, le=20)] = Field(
        default=3,
        description="Lines of the ship-complete order the protection has in mind: a node fills one if "
        "it holds this many SKUs of the demand, so the share of demand its SKUs cover, to the power "
        "of this less one, is its chance to.",
    )


def _default_handling_costs() -> dict[NodeKind, float]:
    return {
        NodeKind.DC: 0.5,
        NodeKind.STORE: 3.0,
        NodeKind.THIRD_PARTY_LOGISTICS: 1.5,
        NodeKind.DROP_SHIP_VENDOR: 0.0,
        NodeKind.MICRO_FULFILMENT: 1.0,
    }


class Policy(BaseModel):
    """The weights and rules of the sourcing decision. Costs are in the order's currency units."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: _PolicyVersion = Field(
        description="Version recorded on every plan (no spaces), e.g. `default-1`; change it with every edit."
    )
    split_cost: _Cost = Field(
        default=4.0,
        description="Cost of each shipment beyond the first (packaging, handling, customer effort).",
    )
    late_penalty_per_day: _Cost = Field(
        default=10.0, description="Cost per day a shipment is expected to arrive after the promised date."
    )
    learning: LearningPolicy = Field(
        default_factory=LearningPolicy,
        description="Routing that learns from execution: risk from rolling measures, circuit breakers.",
    )
    lookahead: LookaheadPolicy = Field(
        default_factory=LookaheadPolicy,
        description="Sourcing that prices the future: the expected cost to later orders of each unit taken "
        "from a node (off by default).",
    )
    preorder_release: PreorderRelease = Field(
        default=PreorderRelease.ON_RELEASE_DATE,
        description="When pre-order lines are planned: on their release date (stock that arrives earlier "
        "stays promised to them) or as soon as their stock arrives.",
    )
    priority_late_multiplier: Annotated[float, Field(ge=1, allow_inf_nan=False)] = Field(
        default=3.0, description="Multiplies the late penalty of priority orders."
    )
    capacity_pressure_weight: _Cost = Field(
        default=2.0,
        description="Cost added to a shipment in proportion to the share of the node's capacity for today "
        "already planned (0 to this weight): spreads work away from busy nodes.",
    )
    node_kind_handling_cost: dict[NodeKind, _Cost] = Field(
        default_factory=_default_handling_costs,
        description="Cost per shipment by kind of node (picking and packing effort); unlisted kinds cost 0.",
    )
    ranked_nodes: tuple[_NodeId, ...] = Field(
        default=(), description="Preferred nodes, most preferred first; each at most once."
    )
    rank_bonus: _Cost = Field(
        default=0.0,
        description="Cost taken off a shipment from the first ranked node; the bonus falls linearly down the "
        "list (the last of n ranked nodes gets rank_bonus / n).",
    )
    max_shipments: Annotated[int, Field(ge=1)] = Field(
        default=3, description="Most shipments one plan may have (a split line counts each node)."
    )
    backorder_policy: Literal["ship_available", "hold_for_stock"] = Field(
        default="ship_available",
        description="When stock is short and the order is not ship-complete: `ship_available` ships what "
        "is there and back-orders the rest; `hold_for_stock` waits until everything can ship. "
        "Ship-complete orders that cannot be filled completely are always held.",
    )
    ship_from_store: ShipFromStoreRule = Field(
        default_factory=ShipFromStoreRule, description="Whether stores may ship to customers."
    )
    channel_rules: dict[Channel, ChannelRule] = Field(
        default_factory=dict, description="Restrictions per sales channel."
    )
    tier_rules: dict[CustomerTier, TierRule] = Field(
        default_factory=dict, description="Service upgrades per customer tier."
    )
    bopis: BopisRule = Field(default_factory=BopisRule, description="Buy online, pick up in store.")
    exact_search_max_lines: Annotated[int, Field(ge=1, le=30)] = Field(
        default=8,
        description="Orders with at most this many lines get the exact (branch and bound) search; larger "
        "ones a greedy heuristic.",
    )
    default_unit_weight_kg: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=1.0, description="Weight of one unit of a line that gives none, for carrier costs."
    )
    holds: HoldRules = Field(
        default_factory=HoldRules, description="Hold rules applied by the validate stage."
    )
    additions: tuple[AdditionRule, ...] = Field(
        default=(),
        description="Lines added to the orders a rule applies to (samples, inserts, packaging), in this "
        "order; each rule's name is unique. They ship only with the customer's lines.",
    )

    @field_validator("ranked_nodes")
    @classmethod
    def _ranked_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        dupes = sorted({n for n in v if v.count(n) > 1})
        if dupes:
            raise ValueError(f"ranked_nodes must not repeat: {', '.join(dupes)}")
        return v

    @field_validator("additions")
    @classmethod
    def _addition_names_unique(cls, v: tuple[AdditionRule, ...]) -> tuple[AdditionRule, ...]:
        return unique_rule_names(v)

    def rank_bonuses(self) -> dict[str, float]:
        """Cost taken off a shipment from each ranked node: the full bonus first, falling linearly."""
        count = len(self.ranked_nodes)
        return {
            node_id: self.rank_bonus * (count - position) / count
            for position, node_id in enumerate(self.ranked_nodes)
        }

    def handling_cost(self, kind: NodeKind) -> float:
        """Cost per shipment from a node of this kind."""
        return self.node_kind_handling_cost.get(kind, 0.0)

    def excluded_kinds(self, channel: Channel) -> tuple[NodeKind, ...]:
        """Kinds of node that never fulfil orders of this channel."""
        rule = self.channel_rules.get(channel)
        return () if rule is None else rule.excluded_node_kinds

    def min_service_level(self, tier: CustomerTier) -> ServiceLevel | None:
        """The service level this tier is upgraded to at least, if any."""
        rule = self.tier_rules.get(tier)
        return None if rule is None else rule.min_service_level


def parse_policy(text: str, source: str) -> Policy:
    """Validate YAML `text` into Policy; `source` names it in error messages."""
    return parse_yaml_model(Policy, text, source=source, what="policy", error=PolicyError)


def load_policy(path: Path | None = None) -> Policy:
    """`path`, else the file ORCHESTRATOR_POLICY_FILE names, else the packaged default."""
    return load_yaml_model(
        Policy, path, env_var=POLICY_FILE_ENV, packaged="default.yaml", what="policy", error=PolicyError
    )


__all__ = [
    "POLICY_FILE_ENV",
    "BopisRule",
    "ChannelRule",
    "HoldRules",
    "LookaheadPolicy",
    "Policy",
    "PolicyError",
    "ShipFromStoreRule",
    "TierRule",
    "load_policy",
    "parse_policy",
]
