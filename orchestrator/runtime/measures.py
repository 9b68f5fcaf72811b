"""A stage's hold on the process's metrics, for what its handlers count themselves.

Handlers never see the registry: the runtime counts what every stage does (events, batches, lag).
What only a stage knows (the outcome of a decision, a lost race) it counts through a `StageMeasures`
it lists among its views. The process binds every view that asks for metrics before it starts
(`run_stages`), so the stage gets the process's own registry, with no module-level collectors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext
from orchestrator.settings import Settings

Count = Callable[[RuntimeMetrics], None]


class StageMeasures:
    """A View only for its life cycle: it reads nothing and is always ready.

    `prepare` creates the stage's series at zero when the process binds its metrics: a counter
    that first appears at 1 hides that first increment from `rate()` and `increase()`, and a
    dashboard shows "no data" instead of 0. Only processes that run the stage export them.
    """

    def __init__(self, name: str, prepare: Count | None = None) -> None:
        self.name = name
        self.topic = ""
        self._prepare = prepare
        self._metrics: RuntimeMetrics | None = None

    @property
    def ready(self) -> bool:
        return True

    @property
    def metrics(self) -> RuntimeMetrics | None:
        return self._metrics

    def bind_metrics(self, metrics: RuntimeMetrics) -> None:
        self._metrics = metrics
        if self._prepare is not None:
            self._prepare(metrics)

    async def start(self, settings: Settings, stop: asyncio.Event) -> None:
        del settings, stop  # nothing to read

    async def close(self) -> None:
        return None

    def count(self, ctx: HandlerContext, count: Count) -> None:
        """Apply `count` to the metrics once the batch of `ctx` commits: a batch rolled back and
        retried counts once, and one that never commits not at all. Nothing without metrics (a
        handler run outside a process, as unit tests do)."""
        metrics = self._metrics
        if metrics is not None:
            ctx.after_commit(lambda: count(metrics))


__all__ = ["Count", "StageMeasures"]
