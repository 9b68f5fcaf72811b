"""What a fault-injection run does to the system, and when: a pure schedule.

Kills go to every stage in turn (a shuffled round, then the next round), so a
run of at least as many kills as stages hits each stage; the instance within
a stage is picked at random. Server faults (broker restarts, the database
restart) and the node closure sit at fixed fractions of the run, apart from
each other, and kills keep a few seconds clear of them so each recovery time
belongs to one fault.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class FaultKind(StrEnum):
    KILL_STAGE = "kill_stage"
    RESTART_BROKER = "restart_broker"
    CRASH_BROKER = "crash_broker"
    CRASH_DATABASE = "crash_database"
    CLOSE_NODE = "close_node"
    REOPEN_NODE = "reopen_node"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault `at_s` seconds after traffic started. `target`: a stage instance or a node id."""

    at_s: float
    kind: FaultKind
    target: str = ""
    #: For a kill: start the instance again (a supervisor would); False leaves it dead (scale-out).
    restart: bool = True

    def describe(self) -> str:
        if self.kind is FaultKind.KILL_STAGE:
            return f"SIGKILL {self.target}" + ("" if self.restart else " (not restarted)")
        words = {
            FaultKind.RESTART_BROKER: "restart the Kafka broker (clean stop)",
            FaultKind.CRASH_BROKER: "SIGKILL the Kafka broker and start it again",
            FaultKind.CRASH_DATABASE: "SIGKILL PostgreSQL and start it again",
            FaultKind.CLOSE_NODE: f"close node {self.target}",
            FaultKind.REOPEN_NODE: f"reopen node {self.target}",
        }
        return words[self.kind]


@dataclass(frozen=True, slots=True)
class FaultBudget:
    """How much goes wrong in one run."""

    kills: int = 30
    broker_restarts: int = 2
    database_restarts: int = 1
    close_node: bool = True
    #: Kill one instance of every stage for good, half-way (needs two instances of each).
    kill_one_of_each: bool = False


#: Where in the run (0..1) the server faults go; kills keep clear of them (15 s, less in a short run).
_BROKER_AT = (0.3, 0.7)
_DATABASE_AT = (0.5,)
_CLOSE_AT, _REOPEN_AT = 0.2, 0.85
_CLEAR_S = 15.0


def instance_name(stage: str, index: int) -> str:
    return f"{stage}-{index}"


def fault_schedule(
    *,
    duration_s: float,
    stages: Sequence[str],
    instances: int,
    budget: FaultBudget,
    node_to_close: str | None,
    seed: int,
) -> list[Fault]:
    """Every fault of the run, in time order."""
    if duration_s <= 0:
        raise ValueError("the run must last some time to inject faults into")
    if budget.kill_one_of_each and instances < 2:
        raise ValueError("killing one instance of each stage for good needs at least two of each")
    rng = random.Random(seed)
    servers: list[Fault] = []
    for i, at in enumerate(_BROKER_AT[: budget.broker_restarts]):
        # One clean restart and one crash: both ways a broker goes away in production.
        kind = FaultKind.RESTART_BROKER if i % 2 == 0 else FaultKind.CRASH_BROKER
        servers.append(Fault(round(at * duration_s, 1), kind))
    for _ in range(len(_BROKER_AT), budget.broker_restarts):
        servers.append(Fault(round((0.1 + 0.8 * rng.random()) * duration_s, 1), FaultKind.CRASH_BROKER))
    for at in _DATABASE_AT[: budget.database_restarts]:
        servers.append(Fault(round(at * duration_s, 1), FaultKind.CRASH_DATABASE))
    if budget.close_node and node_to_close is not None:
        servers.append(Fault(round(_CLOSE_AT * duration_s, 1), FaultKind.CLOSE_NODE, node_to_close))
        servers.append(Fault(round(_REOPEN_AT * duration_s, 1), FaultKind.REOPEN_NODE, node_to_close))
    busy = [f.at_s for f in servers if f.kind not in (FaultKind.CLOSE_NODE, FaultKind.REOPEN_NODE)]

    # Half-way, one instance of every stage goes for good: its partitions must move to the other.
    for_good_at = round(0.45 * duration_s, 1)
    victims = {s: rng.randrange(instances) for s in stages} if budget.kill_one_of_each else {}
    if victims:
        busy.append(for_good_at)
    clear_s = min(_CLEAR_S, 0.04 * duration_s)
    kills: list[Fault] = []
    order: list[str] = []
    for i in range(budget.kills):
        if not order:
            order = list(stages)
            rng.shuffle(order)
        stage = order.pop()
        # Evenly spread between 5% and 95% of the run, jittered, then nudged clear of server faults.
        at = (0.05 + 0.9 * (i + rng.uniform(0.2, 0.8)) / max(1, budget.kills)) * duration_s
        for busy_at in busy:
            if abs(at - busy_at) < clear_s:
                at = busy_at + clear_s if at >= busy_at else busy_at - clear_s
        at = round(max(0.5, at), 1)
        index = rng.randrange(instances)
        if stage in victims and at >= for_good_at and index == victims[stage]:
            index = (index + 1) % instances  # the victim is gone by then: hit a survivor
        kills.append(Fault(at, FaultKind.KILL_STAGE, instance_name(stage, index)))
    for j, stage in enumerate(victims):
        kills.append(
            Fault(
                round(for_good_at + 0.3 * j, 1),
                FaultKind.KILL_STAGE,
                instance_name(stage, victims[stage]),
                False,
            )
        )
    return sorted([*servers, *kills], key=lambda f: f.at_s)


__all__ = ["Fault", "FaultBudget", "FaultKind", "fault_schedule", "instance_name"]
