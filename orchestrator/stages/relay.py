"""relay: copies every event from one topic to another, doing no work.

It decides nothing and owns nothing. It exists to measure the ceiling: a
chain of relays over the same number of topic hops as the order path, with
the same runtime and client settings, is what the pipeline's throughput is
compared against (`make bench`). It is also the smallest stage there is, and
the runtime's own tests drive it.
"""

from __future__ import annotations

from orchestrator.contract.envelope import Envelope
from orchestrator.runtime.stage import HandlerContext, Stage


def relay_stage(source: str, target: str, *, name: str = "relay") -> Stage:
    async def handle(event: Envelope, ctx: HandlerContext) -> None:
        ctx.emit(target, event.data)

    return Stage(
        name=name,
        inputs=(source,),
        outputs=(target,),
        handler=handle,
        description=f"copies {source} to {target}",
    )
