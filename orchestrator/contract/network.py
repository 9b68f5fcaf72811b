"""Network events on `network.updates.v1`: nodes, their capacity, carriers.

Node events are keyed by node id. Carrier events are keyed by the carrier
service id (a carrier-wide outage by the carrier id), so one service's
definition and its outages stay in order.
"""

from __future__ import annotations

from datetime import date, time
from itertools import pairwise
from typing import Annotated, ClassVar, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, Field, NonNegativeInt, field_validator, model_validator

from orchestrator.contract.base import EventPayload
from orchestrator.contract.common import (
    Address,
    Amount,
    ContractModel,
    CountryCode,
    CurrencyCode,
    Identifier,
    Name,
    NodeCapability,
    NodeKind,
    ServiceLevel,
    Text,
    Weekday,
    require_not_before,
    unique_values,
)

#: A calendar lists a few years of holidays at most; a longer closure is `network.node_status_changed`.
MAX_CALENDAR_DAYS = 400


def calendar_days(days: tuple[date, ...]) -> tuple[date, ...]:
    """Non-working days in date order, or raise naming the repeated ones (the order sent carries
    no meaning, so equal calendars compare equal)."""
    unique_values(tuple(d.isoformat() for d in days), "non_working_days")
    return tuple(sorted(days))


def week_days(days: tuple[Weekday, ...]) -> tuple[Weekday, ...]:
    """Days of the week in week order (Monday first), or raise naming the repeated ones."""
    unique_values(tuple(str(d) for d in days), "working_days")
    return tuple(sorted(days, key=lambda d: d.number))


#: A node's or carrier's holidays: validated and ordered by `calendar_days`, at most `MAX_CALENDAR_DAYS`.
Calendar = Annotated[
    tuple[date, ...],
    Field(max_length=MAX_CALENDAR_DAYS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(calendar_days),
]
#: The days of the week a node or carrier works: validated and ordered by `week_days`.
WorkingWeek = Annotated[tuple[Weekday, ...], Field(min_length=1), AfterValidator(week_days)]


class NodeUpserted(EventPayload):
    """A fulfilment node was created or its master data changed; the event carries all of it.

    The latest `network.node_upserted` of a node replaces the earlier ones;
    `network.node_status_changed` and `network.node_capacity_changed` adjust it in between.
    """

    event_type: ClassVar[str] = "network.node_upserted.v1"
    subject_field: ClassVar[str] = "node_id"

    node_id: Identifier = Field(description="The node's id; the Kafka key.")
    kind: NodeKind = Field(description="What sort of node it is.")
    name: Name = Field(description="Display name.")
    location: Address = Field(description="Where the node ships from (its coordinates drive distance costs).")
    capabilities: tuple[NodeCapability, ...] = Field(
        default=(),
        description="What the node can do beyond shipping ordinary parcels; each at most once.",
        json_schema_extra={"uniqueItems": True},
    )
    daily_capacity: NonNegativeInt = Field(
        description="Work orders the node can take per local day (0: takes none)."
    )
    cutoff_local: time = Field(
        description="Local wall-clock time (HH:MM[:SS], no offset) after which work released "
        "that day ships the next working day."
    )
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="IANA time zone of the node, e.g. `Europe/London`; `cutoff_local` is read in it."
    )
    open: bool = Field(description="Whether the node currently takes work.")
    working_days: WorkingWeek | None = Field(
        default=None,
        description="Days of the week the node hands goods over (to carriers, or to customers "
        "collecting in store). Absent: Monday to Friday for a warehouse, 3PL, micro-fulfilment "
        "centre or drop-ship vendor; every day for a store.",
        json_schema_extra={"uniqueItems": True},
    )
    non_working_days: Calendar = Field(
        default=(),
        description="Local dates the node ships nothing (public holidays, stock-takes), besides the "
        "days of the week missing from `working_days`. Work planned for such a day leaves on the "
        "node's next working day.",
    )

    @field_validator("capabilities")
    @classmethod
    def _capabilities_unique(cls, v: tuple[NodeCapability, ...]) -> tuple[NodeCapability, ...]:
        unique_values(tuple(str(c) for c in v), "capabilities")
        return v

    @field_validator("cutoff_local")
    @classmethod
    def _cutoff_is_local(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("cutoff_local is a local wall-clock time: give it without an offset")
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        # Cut-offs are computed in this zone, so a zone the runtime cannot load is useless.
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v


class NodeStatusChanged(EventPayload):
    """A node opened or closed (temporarily: storm, stock-take, system outage)."""

    event_type: ClassVar[str] = "network.node_status_changed.v1"
    subject_field: ClassVar[str] = "node_id"

    node_id: Identifier = Field(description="The node; the Kafka key.")
    open: bool = Field(description="True: the node takes work again; false: it takes none.")
    reason: Text = Field(description="Why, for people.")
    changed_at: AwareDatetime = Field(description="When the change took effect.")


class NodeCapacityChanged(EventPayload):
    """A node's daily capacity changed, for good or for one day."""

    event_type: ClassVar[str] = "network.node_capacity_changed.v1"
    subject_field: ClassVar[str] = "node_id"

    node_id: Identifier = Field(description="The node; the Kafka key.")
    daily_capacity: NonNegativeInt = Field(description="Work orders the node can take per local day.")
    for_date: date | None = Field(
        default=None,
        description="The one local day this capacity applies to; absent: the node's standing capacity.",
    )
    reason: Text | None = Field(default=None, description="Why, for people.")


class DistanceBand(ContractModel):
    """Surcharge for destinations up to `max_km` (great-circle) from the node."""

    max_km: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        description="Upper bound of the band, inclusive, in km."
    )
    surcharge: Amount = Field(description="Added to the base price for a destination in this band.")


class DistanceBandCost(ContractModel):
    """Price = base + per_kg x weight + the surcharge of the distance band of the destination.

    Destinations beyond the last band are not served.
    """

    kind: Literal["distance_bands"] = Field(description="Always `distance_bands`.")
    currency: CurrencyCode = Field(description="ISO 4217 currency of the amounts.")
    base: Amount = Field(description="Price per shipment.")
    per_kg: Amount = Field(description="Price per kg of shipment weight.")
    bands: tuple[DistanceBand, ...] = Field(min_length=1, description="Bands in increasing `max_km`.")

    @field_validator("bands")
    @classmethod
    def _increasing(cls, v: tuple[DistanceBand, ...]) -> tuple[DistanceBand, ...]:
        if any(b.max_km >= n.max_km for b, n in pairwise(v)):
            raise ValueError("bands must be in strictly increasing max_km")
        return v


class ZoneRate(ContractModel):
    """Surcharge for destinations in one zone of the carrier's zone table."""

    zone: Identifier = Field(description="Zone name, as the carrier calls it.")
    country: CountryCode = Field(description="Destination country of the zone.")
    postal_prefixes: tuple[Annotated[str, Field(min_length=1, max_length=16)], ...] = Field(
        default=(),
        description="Postal-code prefixes in the zone; empty: the whole country. The longest match wins.",
    )
    surcharge: Amount = Field(description="Added to the base price for a destination in this zone.")


class ZoneTableCost(ContractModel):
    """Price = base + per_kg x weight + the surcharge of the destination's zone.

    Destinations in no zone are not served.
    """

    kind: Literal["zone_table"] = Field(description="Always `zone_table`.")
    currency: CurrencyCode = Field(description="ISO 4217 currency of the amounts.")
    base: Amount = Field(description="Price per shipment.")
    per_kg: Amount = Field(description="Price per kg of shipment weight.")
    zones: tuple[ZoneRate, ...] = Field(min_length=1, description="The zone table.")


#: How a carrier service prices a shipment, told apart by `kind`.
CostModel = Annotated[DistanceBandCost | ZoneTableCost, Field(discriminator="kind")]


class CarrierServiceUpserted(EventPayload):
    """A carrier service was defined or changed; the event carries all of it."""

    event_type: ClassVar[str] = "network.carrier_service_upserted.v1"
    subject_field: ClassVar[str] = "service_id"

    service_id: Identifier = Field(description="The service's id, unique across carriers; the Kafka key.")
    carrier: Identifier = Field(description="The carrier's id, e.g. `dhl`.")
    name: Name = Field(description="Display name, e.g. `DHL Express 12:00`.")
    service_level: ServiceLevel = Field(description="Speed class.")
    transit_days: NonNegativeInt = Field(description="Working days from pickup to delivery (0: same day).")
    reliability: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        description="Share of shipments delivered within `transit_days` (0..1), from history."
    )
    hazmat_allowed: bool = Field(description="Whether the service carries hazmat-labelled goods.")
    oversize_allowed: bool = Field(default=True, description="Whether the service carries oversize parcels.")
    countries: tuple[CountryCode, ...] = Field(
        min_length=1, description="Destination countries served.", json_schema_extra={"uniqueItems": True}
    )
    cost: CostModel = Field(description="How the service prices a shipment.")
    active: bool = Field(default=True, description="False: the service is withdrawn; plan nothing on it.")
    working_days: WorkingWeek | None = Field(
        default=None,
        description="Days of the week the service moves and delivers parcels: `transit_days` count "
        "them. Absent: Monday to Friday (add `saturday` for a service that delivers on Saturdays).",
        json_schema_extra={"uniqueItems": True},
    )
    non_working_days: Calendar = Field(
        default=(),
        description="Dates that are not transit days for the service, besides the days of the week "
        "missing from `working_days` (its public holidays): it delivers on none of them, and "
        "`transit_days` count the days left.",
    )

    @field_validator("countries")
    @classmethod
    def _countries_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return unique_values(v, "countries")


class CarrierOutage(EventPayload):
    """A carrier service, or a whole carrier, cannot take shipments for a time.

    Re-sending the same `outage_id` updates the outage (end it early by
    setting `ends_at`). The Kafka key is `service_id`, or `carrier` when the
    whole carrier is out.
    """

    event_type: ClassVar[str] = "network.carrier_outage.v1"
    subject_field: ClassVar[str] = "target"

    outage_id: Identifier = Field(description="Id of the outage; later events with it replace earlier ones.")
    carrier: Identifier = Field(description="The carrier.")
    service_id: Identifier | None = Field(
        default=None, description="The service that is out; absent: every service of the carrier."
    )
    starts_at: AwareDatetime = Field(description="When the outage starts.")
    ends_at: AwareDatetime | None = Field(
        default=None, description="When it ends; absent: until further notice."
    )
    reason: Text = Field(description="Why, for people.")

    @property
    def target(self) -> str:
        """What is out (and the Kafka key): the service, or the whole carrier."""
        return self.service_id or self.carrier

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        require_not_before(self.starts_at, self.ends_at, "starts_at", "ends_at")
        return self
