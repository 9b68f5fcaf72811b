"""Value types shared by the event payloads: ids, money, addresses, lines, enums.

Conventions every payload follows, so integrators learn them once:

- Money is a `Decimal` amount in the currency named next to it (ISO 4217).
  On the wire it is a JSON string (`"19.99"`) so no amount is ever rounded by
  a binary float; a JSON number is accepted on input.
- Times are RFC 3339 with an offset (`AwareDatetime`); a time without a zone
  is rejected, because "17:00" means nothing across a network of nodes.
  Calendar days (promised delivery dates) are plain `date`s.
- Ids are opaque, non-empty strings without whitespace.
- Enumerations are lower-case strings; consumers should treat a value they do
  not know as "other" rather than fail, because new values are added within a
  major version.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

# ---------------------------------------------------------------------------
# Scalar types
# ---------------------------------------------------------------------------

#: An identifier issued by some system (order, line, SKU, node, work order...).
Identifier = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^\S+$"),
]
#: Human-readable text that must say something.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
#: A short human-readable name.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
#: ISO 4217 currency code, upper case.
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
#: ISO 3166-1 alpha-2 country code, upper case.
CountryCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
#: A machine-readable code such as a reason code: lower case, digits, `_`, `-`, `.`.
Code = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]

_DECIMAL_STRING = r"^\d{1,14}(\.\d{1,4})?$"
#: A non-negative money amount (at most 4 decimal places). The JSON Schema is
#: spelled out by hand because pydantic's own accepts any string.
Amount = Annotated[
    Decimal,
    Field(ge=0, max_digits=18, decimal_places=4, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DECIMAL_STRING},
                {"type": "number", "minimum": 0},
            ]
        }
    ),
]
#: A strictly positive weight in kilograms (at most 3 decimal places: grams).
WeightKg = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=3, allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d{1,9}(\.\d{1,3})?$"},
                {"type": "number", "exclusiveMinimum": 0},
            ]
        }
    ),
]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
#: How many units of a SKU: always at least one.
Quantity = PositiveInt


class ContractModel(BaseModel):
    """Base of the value types nested in payloads: same strictness as the payloads."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# ---------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------


class Channel(StrEnum):
    """Where the customer placed the order."""

    WEB = "web"
    APP = "app"
    STORE = "store"
    MARKETPLACE = "marketplace"
    B2B_EDI = "b2b_edi"
    CALL_CENTRE = "call_centre"


class CustomerTier(StrEnum):
    """The customer's service tier; policies may route and promise by tier."""

    STANDARD = "standard"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


class ProductLabel(StrEnum):
    """Handling attributes of a product that constrain which nodes and carriers may take it."""

    HAZMAT = "hazmat"
    OVERSIZE = "oversize"
    FRAGILE = "fragile"
    PERISHABLE = "perishable"
    HIGH_VALUE = "high_value"
    AGE_RESTRICTED = "age_restricted"


class HoldReason(StrEnum):
    """A hold the OMS knows about; the order waits until the OMS releases it."""

    PAYMENT_PENDING = "payment_pending"
    FRAUD_REVIEW = "fraud_review"


class DeliveryMethod(StrEnum):
    """How the customer receives the goods."""

    STANDARD = "standard"
    EXPRESS = "express"
    NEXT_DAY = "next_day"
    BOPIS = "bopis"
    SHIP_TO_STORE = "ship_to_store"


class ServiceLevel(StrEnum):
    """Speed class of a carrier service."""

    GROUND = "ground"
    STANDARD = "standard"
    EXPRESS = "express"
    NEXT_DAY = "next_day"


class NodeKind(StrEnum):
    """What sort of fulfilment node a node is."""

    DC = "dc"
    STORE = "store"
    THIRD_PARTY_LOGISTICS = "3pl"
    DROP_SHIP_VENDOR = "drop_ship_vendor"
    MICRO_FULFILMENT = "micro_fulfilment"


class Weekday(StrEnum):
    """A day of the week, in a node's or a carrier's working pattern."""

    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"

    @property
    def number(self) -> int:
        """Monday 0 to Sunday 6, as `date.weekday()` counts."""
        return _WEEKDAY_NUMBERS[self]


_WEEKDAY_NUMBERS = {day: n for n, day in enumerate(Weekday)}


class NodeCapability(StrEnum):
    """What a node is able to do beyond picking and shipping ordinary parcels."""

    SHIP_FROM_STORE = "ship_from_store"
    BOPIS_PICKUP = "bopis_pickup"
    HAZMAT = "hazmat"
    OVERSIZE = "oversize"
    SHIP_TO_STORE_RECEIVE = "ship_to_store_receive"


class OrderState(StrEnum):
    """The state of an order (or of one of its lines) as the OMS is told it."""

    RECEIVED = "received"
    VALIDATED = "validated"
    ON_HOLD = "on_hold"
    PLANNED = "planned"
    RESERVED = "reserved"
    RELEASED = "released"
    PARTIALLY_SHIPPED = "partially_shipped"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    BACK_ORDERED = "back_ordered"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    NEEDS_ATTENTION = "needs_attention"


#: States after which nothing more happens to an order.
TERMINAL_STATES: frozenset[OrderState] = frozenset(
    {OrderState.DELIVERED, OrderState.CANCELLED, OrderState.REJECTED}
)


# ---------------------------------------------------------------------------
# Shared structures
# ---------------------------------------------------------------------------


class Address(ContractModel):
    """A postal address with its geocoded position (used for distance and zone costs)."""

    name: Name | None = Field(default=None, description="Recipient or site name printed on the label.")
    line1: Name = Field(description="First address line (street and number).")
    line2: Name | None = Field(default=None, description="Second address line, if any.")
    city: Name = Field(description="City or town.")
    region: Name | None = Field(
        default=None, description="State, province or county, if used in the country."
    )
    postal_code: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)] = (
        Field(description="Postal code as written in the country (zone tables match on its prefix).")
    )
    country: CountryCode = Field(description="ISO 3166-1 alpha-2 country code, e.g. `GB`.")
    latitude: Latitude = Field(description="WGS 84 latitude in decimal degrees.")
    longitude: Longitude = Field(description="WGS 84 longitude in decimal degrees.")


def unique_values(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    """Return `values` unchanged, or raise naming the repeated ones (`what` names the field)."""
    if len(set(values)) != len(values):
        dupes = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"{what} must not repeat: {', '.join(dupes)}")
    return values


class PolicyAddition(ContractModel):
    """Why the orchestrator added a line to an order: a rule of the routing policy (a free sample,
    a mandatory insert, packaging). The customer did not order it and the OMS never sends it."""

    rule: Identifier = Field(description="Name of the policy rule that added the line.")
    reason: Text = Field(description="Why, in a sentence for people.")
    for_lines: tuple[Identifier, ...] = Field(
        default=(),
        description="The customer's lines that called for it (it ships with one of them); empty: the "
        "order as a whole.",
    )


class OrderLine(ContractModel):
    """One line of an order: a SKU, how many, at what price, and how it must be handled."""

    line_id: Identifier = Field(description="The OMS's id of the line, unique within the order.")
    sku: Identifier = Field(description="Stock keeping unit.")
    # Not constrained here on purpose: an order with a zero or negative quantity
    # is a business error the OMS must hear about (a rejected status with the
    # reason `non_positive_quantity`), not a dead letter nobody sees.
    quantity: int = Field(description="Units ordered; must be at least 1 or the order is rejected.")
    unit_price: Amount = Field(description="Price of one unit in the order's currency.")
    unit_weight_kg: WeightKg | None = Field(
        default=None, description="Shipping weight of one unit in kg; used for carrier costs when given."
    )
    labels: tuple[ProductLabel, ...] = Field(
        default=(),
        description="Handling labels of the product (hazmat, oversize...); each at most once.",
        json_schema_extra={"uniqueItems": True},
    )
    drop_ship_vendor_id: Identifier | None = Field(
        default=None,
        description="When set, the line can only be fulfilled by this drop-ship vendor (a node of kind "
        "`drop_ship_vendor` with this node id).",
    )
    release_date: date | None = Field(
        default=None,
        description="Pre-order: the day the product is released. A later date than today holds the line "
        "until then (or until its stock arrives, by policy); absent: the product is on sale.",
    )
    addition: PolicyAddition | None = Field(
        default=None,
        description="Set by the orchestrator (validate stage) on a line a policy rule added; such a line "
        "only ships with the customer's lines, never on its own. Absent on the customer's lines: an "
        "order from the OMS that sets it is rejected (`unexpected_addition`).",
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: tuple[ProductLabel, ...]) -> tuple[ProductLabel, ...]:
        unique_values(tuple(str(x) for x in v), "labels")
        return v


class LineQuantity(ContractModel):
    """A quantity of one order line."""

    line_id: Identifier = Field(description="The order line.")
    quantity: Quantity = Field(description="Units (at least 1).")


class SkuLine(ContractModel):
    """A quantity of one order line, with its SKU so a node needs no lookup."""

    line_id: Identifier = Field(description="The order line.")
    sku: Identifier = Field(description="Stock keeping unit.")
    quantity: Quantity = Field(description="Units (at least 1).")


class HomeDelivery(ContractModel):
    """Delivery to the ship-to address by a carrier at the given speed."""

    kind: Literal["standard", "express", "next_day"] = Field(description="Speed the customer chose.")

    @property
    def method(self) -> DeliveryMethod:
        return DeliveryMethod(self.kind)


class StorePickup(ContractModel):
    """Buy online, pick up in store (BOPIS): the customer collects at a store."""

    kind: Literal["bopis"] = Field(description="Always `bopis`.")
    pickup_store_id: Identifier = Field(description="Node id of the store where the customer collects.")

    @property
    def method(self) -> DeliveryMethod:
        return DeliveryMethod.BOPIS


class ShipToStore(ContractModel):
    """The goods are shipped to a store, where the customer collects them."""

    kind: Literal["ship_to_store"] = Field(description="Always `ship_to_store`.")
    store_id: Identifier = Field(description="Node id of the receiving store.")

    @property
    def method(self) -> DeliveryMethod:
        return DeliveryMethod.SHIP_TO_STORE


#: The delivery option the customer chose, told apart by `kind`.
DeliveryOption = Annotated[HomeDelivery | StorePickup | ShipToStore, Field(discriminator="kind")]


class CarrierAssignment(ContractModel):
    """Which carrier and which of its services carries a shipment."""

    carrier: Identifier = Field(description="Carrier id, e.g. `dhl`.")
    service_id: Identifier = Field(
        description="Carrier service id as declared by `network.carrier_service_upserted`."
    )


class Package(ContractModel):
    """One parcel of a shipment."""

    package_id: Identifier = Field(description="The node's id of the parcel.")
    tracking_number: Identifier | None = Field(
        default=None, description="The parcel's own tracking number, when the carrier gives one per parcel."
    )
    weight_kg: WeightKg | None = Field(default=None, description="Weighed parcel weight in kg.")


class Reason(ContractModel):
    """Why something happened: a stable code for machines and a message for people."""

    code: Code = Field(description="Stable machine-readable reason code, e.g. `short_pick`.")
    message: Text = Field(description="Human-readable explanation.")


def require_not_before(earlier: date | None, later: date | None, earlier_name: str, later_name: str) -> None:
    """Raise when `later` is before `earlier` (dates or aware datetimes; None means not given)."""
    if earlier is not None and later is not None and later < earlier:
        raise ValueError(
            f"{later_name} ({later.isoformat()}) must not be before {earlier_name} ({earlier.isoformat()})"
        )
