"""The stages, by name. `orchestrator run NAME` looks them up here.

The order stages run in the order of the fulfilment flow; `relay` is the
no-work stage used to measure the ceiling and is never part of `all`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType

from orchestrator.domain.policy import load_policy
from orchestrator.runtime.stage import Stage
from orchestrator.stages.common import OrderPathDeps, network_view
from orchestrator.stages.decide_node import decide_node_stage
from orchestrator.stages.exceptions import exceptions_stage
from orchestrator.stages.ingest import ingest_stage
from orchestrator.stages.monitor import monitor_stage
from orchestrator.stages.relay import relay_stage
from orchestrator.stages.release import release_stage
from orchestrator.stages.reserve import reserve_stage
from orchestrator.stages.returns import returns_stage
from orchestrator.stages.status_sync import status_sync_stage
from orchestrator.stages.validate import validate_stage

#: The order stages, in flow order (returns last: it starts after delivery).
ORDER_STAGES: Mapping[str, Callable[[OrderPathDeps], Stage]] = MappingProxyType(
    {
        "ingest": lambda deps: ingest_stage(),
        "validate": validate_stage,
        "decide-node": decide_node_stage,
        "reserve": lambda deps: reserve_stage(
            preorder_release=deps.policy.preorder_release,
            # Pre-orders fall due by the day: a scan every 30 s is plenty; tests make it faster.
            supply_tick_s=float(os.environ.get("ORCHESTRATOR_SUPPLY_TICK_S", "30")),
        ),
        "release": release_stage,
        "monitor": monitor_stage,
        "exceptions": exceptions_stage,
        "status-sync": lambda deps: status_sync_stage(),
        "returns": returns_stage,
    }
)


def order_path_deps() -> OrderPathDeps:
    """One network view and one policy, shared by every stage of the process."""
    return OrderPathDeps(network=network_view(), policy=load_policy())


def build_stages(
    name: str, *, relay_input: str | None = None, relay_output: str | None = None
) -> list[Stage]:
    """The stages `orchestrator run NAME` runs, with a clear error for a wrong name."""
    if name == "relay":
        if not relay_input or not relay_output:
            raise ValueError("relay needs --input TOPIC and --output TOPIC")
        return [relay_stage(relay_input, relay_output)]
    if name == "all":
        deps = order_path_deps()
        return [factory(deps) for factory in ORDER_STAGES.values()]
    factory = ORDER_STAGES.get(name)
    if factory is None:
        known = ", ".join([*ORDER_STAGES, "relay", "all"])
        raise ValueError(f"unknown stage {name!r}; known: {known}")
    return [factory(order_path_deps())]
