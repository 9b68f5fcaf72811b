"""The stages, by name. `orchestrator run NAME` looks them up here.

The eight order stages run in the order of the fulfilment flow; `relay` is
the no-work stage used to measure the ceiling and is never part of `all`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from orchestrator.runtime.stage import Stage
from orchestrator.stages.relay import relay_stage

#: Order stages in flow order; later issues fill in the rest of the eight.
ORDER_STAGES: Mapping[str, Callable[[], Stage]] = MappingProxyType({})


def build_stages(
    name: str, *, relay_input: str | None = None, relay_output: str | None = None
) -> list[Stage]:
    """The stages `orchestrator run NAME` runs, with a clear error for a wrong name."""
    if name == "relay":
        if not relay_input or not relay_output:
            raise ValueError("relay needs --input TOPIC and --output TOPIC")
        return [relay_stage(relay_input, relay_output)]
    if name == "all":
        if not ORDER_STAGES:
            raise ValueError("no order stage is installed yet")
        return [factory() for factory in ORDER_STAGES.values()]
    factory = ORDER_STAGES.get(name)
    if factory is None:
        known = ", ".join([*ORDER_STAGES, "relay", "all"])
        raise ValueError(f"unknown stage {name!r}; known: {known}")
    return [factory()]
