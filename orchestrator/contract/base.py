"""The base every event payload stands on.

An event on Kafka is a CloudEvents envelope (headers) around a payload (the
value). Payloads are pydantic models: the single source of truth for the
contract, from which `schemas/` is generated.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    """Base class of every event payload.

    `event_type` is the CloudEvents `type` (also the schema file name). It ends
    in a major version: a breaking change to a payload is a new type, so old
    and new consumers can run side by side.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_type: ClassVar[str]
    #: Which field carries the partition key (`ce_subject`): the order id for
    #: order events, the SKU for inventory events, the node id for network ones.
    subject_field: ClassVar[str] = "order_id"

    def subject(self) -> str:
        return str(getattr(self, self.subject_field))


class UnknownEventType(ValueError):
    """Raised for a `ce_type` that no payload model declares."""
