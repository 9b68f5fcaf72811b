"""Exception playbooks: what the orchestrator does, by itself, when a plan fails.

A playbook is an ordered list of actions per kind of exception; the
exceptions stage tries them in order until one resolves the exception, and
puts the exception in the manual-review queue when none does. The file also
holds the monitor's milestone timers and the limits a repair must stay
within. Like the routing policy it is YAML, validated here into an immutable
`Playbooks`; the package ships `orchestrator/policies/playbooks.yaml` and
`ORCHESTRATOR_PLAYBOOKS_FILE` points at another file.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from orchestrator.contract.status import ExceptionKind
from orchestrator.domain.yaml_config import load_yaml_model, parse_yaml_model

#: Environment variable naming the playbooks file to load instead of the packaged default.
PLAYBOOKS_FILE_ENV = "ORCHESTRATOR_PLAYBOOKS_FILE"


class PlaybookError(ValueError):
    """A playbooks file that cannot be read or does not validate; the message names the file and field."""


class PlaybookAction(StrEnum):
    """One thing a playbook can do about an exception."""

    #: Plan the unfilled quantity again at another node (the failed one excluded).
    REROUTE = "reroute"
    #: Like reroute, but the quantity may be spread over several nodes. Today the
    #: decision engine already splits a re-planned quantity when no single node has
    #: it, so this sends the same request as reroute, under its own name so that a
    #: playbook can say what it means and the engine can tell them apart later.
    SPLIT = "split"
    #: Plan the failing shipment again at the same node on a faster service (before it has shipped).
    REBOOK_FASTER = "rebook_faster"
    #: The unfilled quantity waits for stock; the order is back-ordered.
    BACKORDER = "backorder"
    #: A person looks at it: a row in the review queue, the order needs attention.
    HOLD_FOR_REVIEW = "hold_for_review"
    #: Tell the customer the new delivery date.
    NOTIFY_NEW_DATE = "notify_new_date"
    #: Ask the customer what they prefer (ship the rest later, refund the missing item).
    OFFER_OPTIONS = "offer_options"
    #: Refund the lines that cannot be delivered, and tell the customer.
    CANCEL_LINE_REFUND = "cancel_line_refund"


#: Actions carried out by the order path (decide-node, reserve, release), which answer with a RepairOutcome.
PIPELINE_ACTIONS: frozenset[PlaybookAction] = frozenset(
    {PlaybookAction.REROUTE, PlaybookAction.SPLIT, PlaybookAction.REBOOK_FASTER}
)

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(value: Any) -> timedelta:
    """`30m`, `24h`, `5s`, `1d`, `1h30m` as a timedelta; a timedelta is taken as it is."""
    if isinstance(value, timedelta):
        parsed = value
    else:
        # A bare number is refused on purpose: is `30` seconds or minutes? The unit must be written.
        text = value.strip() if isinstance(value, str) else ""
        match = _DURATION.match(text)
        if not text or match is None:
            raise ValueError(f"expected a duration such as 30m, 24h, 5s or 1h30m, got {value!r}")
        parts = {k: int(v) for k, v in match.groupdict(default="0").items()}
        parsed = timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    if parsed <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {value!r}")
    return parsed


#: A positive duration written with units in YAML (`30m`, `24h`).
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_Version = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\S{1,128}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timers(_Model):
    """Milestone deadlines the monitor watches, counted from the work order's release."""

    acknowledge_within: Duration = Field(
        default=timedelta(minutes=30), description="A node must acknowledge a work order within this."
    )
    carrier_scan_within: Duration = Field(
        default=timedelta(hours=24), description="The carrier must scan a shipped parcel within this."
    )
    collection_within: Duration = Field(
        default=timedelta(days=7),
        description="The customer must collect a collect-in-store order within this of it being ready.",
    )


class Limits(_Model):
    """What a repair (re-route, split, faster re-booking) may cost; beyond these it fails."""

    max_extra_cost: float = Field(
        default=15.0, ge=0, allow_inf_nan=False, description="Most a repair may cost, in order currency."
    )
    max_delay_days: int = Field(
        default=2, ge=0, description="Most days past the order's promise a repair may arrive."
    )


class Playbooks(_Model):
    """Every kind of exception's playbook, the monitor's timers and the repair limits."""

    version: _Version = Field(description="Version of the file (no spaces); change it with every edit.")
    timers: Timers = Field(default_factory=Timers, description="Milestone deadlines for the monitor.")
    limits: Limits = Field(default_factory=Limits, description="What a repair may cost and delay.")
    max_attempts_per_action: int = Field(
        default=1, ge=1, description="How often one action is tried before the next one is."
    )
    playbooks: dict[ExceptionKind, tuple[PlaybookAction, ...]] = Field(
        description="Per kind of exception, the actions to try in order; every kind must have one."
    )

    @field_validator("playbooks")
    @classmethod
    def _complete_and_sane(
        cls, v: dict[ExceptionKind, tuple[PlaybookAction, ...]]
    ) -> dict[ExceptionKind, tuple[PlaybookAction, ...]]:
        # An exception without a playbook would be opened and then silently do nothing.
        missing = [kind.value for kind in ExceptionKind if kind not in v]
        if missing:
            raise ValueError(f"every kind of exception needs a playbook; missing: {', '.join(missing)}")
        for kind, actions in v.items():
            if not actions:
                raise ValueError(f"{kind.value}: a playbook needs at least one action")
            dupes = sorted({a.value for a in actions if actions.count(a) > 1})
            if dupes:
                raise ValueError(
                    f"{kind.value}: {', '.join(dupes)} listed twice "
                    "(max_attempts_per_action is how to repeat an action)"
                )
        return v

    def actions_for(self, kind: ExceptionKind) -> tuple[PlaybookAction, ...]:
        """The actions to try for this kind of exception, in order."""
        return self.playbooks[kind]


def parse_playbooks(text: str, source: str) -> Playbooks:
    """Validate YAML `text` into Playbooks; `source` names it in error messages."""
    return parse_yaml_model(Playbooks, text, source=source, what="playbooks", error=PlaybookError)


def load_playbooks(path: Path | None = None) -> Playbooks:
    """`path`, else the file ORCHESTRATOR_PLAYBOOKS_FILE names, else the packaged default."""
    return load_yaml_model(
        Playbooks,
        path,
        env_var=PLAYBOOKS_FILE_ENV,
        packaged="playbooks.yaml",
        what="playbooks",
        error=PlaybookError,
    )


__all__ = [
    "PIPELINE_ACTIONS",
    "PLAYBOOKS_FILE_ENV",
    "Duration",
    "Limits",
    "PlaybookAction",
    "PlaybookError",
    "Playbooks",
    "Timers",
    "load_playbooks",
    "parse_duration",
    "parse_playbooks",
]
