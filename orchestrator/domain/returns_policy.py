"""The returns policy: where returned goods may go, when a refund needs no return, when an exchange ships.

A YAML file validated into an immutable `ReturnsPolicy`, like the routing
policy and the playbooks. The package ships `orchestrator/policies/returns.yaml`;
`ORCHESTRATOR_RETURNS_POLICY_FILE` points at another file.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from orchestrator.contract.common import CustomerTier, NodeKind, ServiceLevel
from orchestrator.contract.returns import ReturnReason, ReturnResolution
from orchestrator.domain.yaml_config import load_yaml_model, parse_yaml_model

#: Environment variable naming the returns policy file to load instead of the packaged default.
RETURNS_POLICY_FILE_ENV = "ORCHESTRATOR_RETURNS_POLICY_FILE"

_Version = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\S{1,128}$")]


class ReturnsPolicyError(ValueError):
    """A returns policy that cannot be read or does not validate; the message names the file and field."""


class ReplacementTiming(StrEnum):
    """When an exchange's replacement ships."""

    AT_ONCE = "at_once"  # with the return authorised, before the goods come back
    AFTER_RECEIPT = "after_receipt"  # once the node has the returned goods


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: tuple[str, ...], what: str) -> None:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must not repeat")


class RefundWithoutReturn(_Rule):
    """Below a value, collecting the goods costs more than they are worth: the customer keeps them."""

    below: Decimal = Field(
        default=Decimal("0"),
        ge=0,
        description="Returns worth less than this (the returned units at their order price) need no "
        "return; 0 switches it off.",
    )
    resolutions: tuple[ReturnResolution, ...] = Field(
        default=(ReturnResolution.REFUND, ReturnResolution.STORE_CREDIT),
        description="Resolutions the rule applies to.",
    )


class ExchangeRule(_Rule):
    """When the replacement of an exchange ships, and what it promises."""

    replacement: ReplacementTiming = Field(
        default=ReplacementTiming.AFTER_RECEIPT, description="The default timing."
    )
    at_once_for_reasons: tuple[ReturnReason, ...] = Field(
        default=(), description="Return reasons whose replacement ships at once whatever the default."
    )
    at_once_for_tiers: tuple[CustomerTier, ...] = Field(
        default=(), description="Customer tiers whose replacement ships at once whatever the default."
    )
    promise_days: int = Field(
        default=5,
        ge=0,
        le=60,
        description="The replacement is promised this many days after it is asked for.",
    )

    def timing(self, reason: ReturnReason, tier: CustomerTier) -> ReplacementTiming:
        if reason in self.at_once_for_reasons or tier in self.at_once_for_tiers:
            return ReplacementTiming.AT_ONCE
        return self.replacement


class ReturnsPolicy(_Rule):
    """Every rule of returns and exchanges."""

    version: _Version = Field(
        description="Recorded in logs and the README's examples; bump it with every change."
    )
    refund_without_return: RefundWithoutReturn = Field(
        default_factory=RefundWithoutReturn, description="When the customer keeps the goods and is refunded."
    )
    ship_back_node_kinds: tuple[NodeKind, ...] = Field(
        default=(NodeKind.DC, NodeKind.THIRD_PARTY_LOGISTICS),
        min_length=1,
        description="Kinds of node that receive returns sent back as parcels.",
    )
    in_store_node_kinds: tuple[NodeKind, ...] = Field(
        default=(NodeKind.STORE,),
        min_length=1,
        description="Kinds of node where customers may bring returns.",
    )
    prefer_nodes_stocking_the_sku: bool = Field(
        default=True,
        description="True: a node that already stocks every returned SKU (it has a ledger row for it) wins "
        "over a nearer one that does not, so restocked units can be sold where they are sold anyway.",
    )
    label_service_levels: tuple[ServiceLevel, ...] = Field(
        default=(ServiceLevel.GROUND, ServiceLevel.STANDARD),
        min_length=1,
        description="Carrier service levels a return label may use (returns are not urgent).",
    )
    default_unit_weight_kg: Decimal = Field(
        default=Decimal("1.0"), gt=0, description="Weight of a unit whose order line gives none, for labels."
    )
    exchange: ExchangeRule = Field(
        default_factory=ExchangeRule, description="When an exchange's replacement ships, and its promise."
    )

    @field_validator("ship_back_node_kinds", "in_store_node_kinds", "label_service_levels")
    @classmethod
    def _no_repeats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        _unique(v, "the list")
        return v


def parse_returns_policy(text: str, *, source: str = "<text>") -> ReturnsPolicy:
    """A returns policy from YAML text (tests, tools)."""
    return parse_yaml_model(
        ReturnsPolicy, text, source=source, what="returns policy", error=ReturnsPolicyError
    )


def load_returns_policy(path: Path | None = None) -> ReturnsPolicy:
    """`path`, else the file ORCHESTRATOR_RETURNS_POLICY_FILE names, else the packaged default."""
    return load_yaml_model(
        ReturnsPolicy,
        path,
        env_var=RETURNS_POLICY_FILE_ENV,
        packaged="returns.yaml",
        what="returns policy",
        error=ReturnsPolicyError,
    )


__all__ = [
    "RETURNS_POLICY_FILE_ENV",
    "ExchangeRule",
    "RefundWithoutReturn",
    "ReplacementTiming",
    "ReturnsPolicy",
    "ReturnsPolicyError",
    "load_returns_policy",
    "parse_returns_policy",
]
