"""The promise API's request and answer: pydantic models, from which its OpenAPI document is generated."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pydantic import AwareDatetime, Field, NonNegativeInt, field_validator, model_validator

from orchestrator.contract.common import (
    Address,
    Amount,
    CarrierAssignment,
    Channel,
    ContractModel,
    CurrencyCode,
    CustomerTier,
    DeliveryOption,
    HomeDelivery,
    Identifier,
    ProductLabel,
    Quantity,
    ServiceLevel,
    Text,
    WeightKg,
    unique_values,
)
from orchestrator.contract.pipeline import PlanOutcome

#: A cart larger than this is not a checkout; it is refused rather than planned.
MAX_CART_LINES = 100
MAX_DELIVERY_OPTIONS = 6
#: An `Amount` has at most 14 digits before the point: the cart's total must be one too.
MAX_CART_TOTAL = Decimal(10) ** 14


class CartLine(ContractModel):
    """One SKU in the cart."""

    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(le=100_000, description="Units wanted (at least 1).")
    unit_price: Amount = Field(default=Decimal(0), description="Price of one unit (not used to choose).")
    unit_weight_kg: WeightKg | None = Field(default=None, description="Shipping weight of one unit in kg.")
    labels: tuple[ProductLabel, ...] = Field(
        default=(),
        description="Handling labels (hazmat, oversize...); each at most once.",
        json_schema_extra={"uniqueItems": True},
    )
    drop_ship_vendor_id: Identifier | None = Field(
        default=None, description="Only this drop-ship vendor can fulfil the line."
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: tuple[ProductLabel, ...]) -> tuple[ProductLabel, ...]:
        if len(set(v)) != len(v):  # every request checks; only a bad one needs the names
            unique_values(tuple(str(x) for x in v), "labels")
        return v


class PromiseRequest(ContractModel):
    """Can this cart be delivered to this address, by when, from where, for how much?"""

    cart: tuple[CartLine, ...] = Field(min_length=1, max_length=MAX_CART_LINES, description="The cart.")
    ship_to: Address | None = Field(default=None, description="Where the goods go (absent only for BOPIS).")
    delivery_options: tuple[DeliveryOption, ...] = Field(
        default=(HomeDelivery(kind="standard"),),
        min_length=1,
        max_length=MAX_DELIVERY_OPTIONS,
        description="The delivery options to quote, each answered on its own (default: standard home "
        "delivery).",
    )
    deliver_by: date | None = Field(
        default=None,
        description="A date the customer wants it by: lateness against it costs as it would for the order. "
        "Absent: the fastest date is not required, only the option's speed.",
    )
    channel: Channel = Field(default=Channel.WEB, description="Where the order would be placed.")
    customer_tier: CustomerTier = Field(default=CustomerTier.STANDARD, description="The customer's tier.")
    ship_complete: bool = Field(default=False, description="True: one shipment or none.")
    priority: bool = Field(default=False, description="True: a priority order.")
    currency: CurrencyCode = Field(default="GBP", description="Currency of prices and costs.")

    @model_validator(mode="after")
    def _total_is_an_amount(self) -> PromiseRequest:
        # The order a quote plans is this cart placed: its total must be an amount like any order's.
        total = sum((line.unit_price * line.quantity for line in self.cart), Decimal(0))
        if total >= MAX_CART_TOTAL:
            raise ValueError(f"the cart's total ({total}) is more than an order's total can be")
        return self


class PromisedLine(ContractModel):
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(description="Units.")


class PromisedShipment(ContractModel):
    """One shipment the orchestrator would make now."""

    node_id: Identifier = Field(description="The node that would fulfil it.")
    lines: tuple[PromisedLine, ...] = Field(description="What it carries.")
    carrier: CarrierAssignment = Field(description="Carrier and service.")
    service_level: ServiceLevel = Field(description="Speed class of the service.")
    ship_by: AwareDatetime = Field(description="The node's cut-off it would make.")
    promised_delivery_date: date = Field(description="When it would be delivered (or ready for pickup).")
    shipping_cost: Amount = Field(description="What the carrier charges.")
    distance_km: float = Field(ge=0, description="Node to destination, great circle.")


class PromiseOption(ContractModel):
    """The answer for one delivery option: the plan decide-node would make if the order came now."""

    delivery: DeliveryOption = Field(description="The delivery option quoted.")
    outcome: PlanOutcome = Field(description="`ship`: every unit can go; otherwise what would happen.")
    promised_delivery_date: date | None = Field(
        description="The date the last shipment arrives; absent when nothing can ship."
    )
    shipping_cost: Amount = Field(description="Carrier charges over all shipments.")
    total_cost: float = Field(description="The optimiser's cost of the plan (shipping, handling, splits...).")
    split: bool = Field(description="True: more than one shipment.")
    shipments: tuple[PromisedShipment, ...] = Field(description="The shipments.")
    short: tuple[PromisedLine, ...] = Field(default=(), description="Units that could not ship now.")
    explanation: tuple[Text, ...] = Field(description="The decision in words.")
    promise_token: str | None = Field(
        description="Pass as the order's `promise_token`: decide-node then says whether the order got this "
        "plan, and why not. Absent when nothing can ship."
    )


class NodeAvailability(ContractModel):
    node_id: Identifier = Field(description="The node.")
    available: NonNegativeInt = Field(
        description="Units it can promise: on hand less reserved and safety stock."
    )


class SkuAvailability(ContractModel):
    """Available to promise of one SKU, per node and over the network."""

    sku: Identifier = Field(description="Stock keeping unit.")
    network: NonNegativeInt = Field(description="Units over every node.")
    nodes: tuple[NodeAvailability, ...] = Field(description="Nodes that hold a position in the SKU.")


class PromiseResponse(ContractModel):
    quoted_at: AwareDatetime = Field(description="When the answer was computed.")
    policy_version: Identifier = Field(description="The routing policy that decided.")
    options: tuple[PromiseOption, ...] = Field(description="One per delivery option asked, in that order.")
    availability: tuple[SkuAvailability, ...] = Field(description="Per SKU of the cart.")


class AvailabilityResponse(ContractModel):
    as_of: AwareDatetime = Field(description="When the answer was computed.")
    ledger_events: NonNegativeInt = Field(
        description="Inventory and reservation events the view has applied."
    )
    skus: tuple[SkuAvailability, ...] = Field(description="Per SKU asked.")


class ProblemDetails(ContractModel):
    """An error (RFC 9457 style)."""

    status: int = Field(description="HTTP status.")
    title: str = Field(description="What went wrong, in short.")
    detail: str = Field(description="Why, for people.")


__all__ = [
    "AvailabilityResponse",
    "CartLine",
    "NodeAvailability",
    "ProblemDetails",
    "PromiseOption",
    "PromiseRequest",
    "PromiseResponse",
    "PromisedLine",
    "PromisedShipment",
    "SkuAvailability",
]
