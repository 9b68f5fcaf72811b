"""Every stage as its own process, as deployed: `orchestrator run STAGE` per instance, each on its
own /metrics port, started, watched, killed and restarted the way a supervisor would.

`make run`, `make faults` and the benchmarks run the stages this way. In one process
(`orchestrator run all`) the nine stages share one event loop, and at 5 orders/s it was the
bottleneck: `make run` gave order placed to first work order released in 0.5-1.3 s (p50) against
0.2-0.3 s with a process per stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Literal, overload

import aiohttp

from orchestrator.faults.plan import instance_name
from orchestrator.infra.ports import free_port, free_ports, port_free
from orchestrator.sim.live.children import Child, ChildFailed, spawn, wait_ready
from orchestrator.sim.live.observer import stage_gauge
from orchestrator.stages import ORDER_STAGES
from orchestrator.topics import load_catalog

#: How many taken ports `_ports` passes over before it draws the rest.
_PORTS_PASSED_OVER = 20


def stage_of(instance: str) -> str:
    """`reserve-1` -> `reserve`."""
    return instance.rsplit("-", 1)[0]


def _ports(count: int, avoid: frozenset[int], first: int | None) -> list[int]:
    """`count` /metrics ports: the free ones from `first` up, passing over `avoid` (so a person can
    guess them); without `first`, drawn."""
    if first is None:
        return free_ports(count, avoid)
    ports: list[int] = []
    port = first
    while len(ports) < count and port < first + count + _PORTS_PASSED_OVER:
        if port not in avoid and port_free(port):
            ports.append(port)
        port += 1
    return ports + free_ports(count - len(ports), avoid | set(ports))


class StageFleet:
    """Every stage instance as its own process, each on its own /metrics port."""

    def __init__(
        self,
        instances: int,
        env: dict[str, str],
        log_dir: Path,
        host: str = "127.0.0.1",
        avoid: frozenset[int] = frozenset(),
        first_port: int | None = None,
    ) -> None:
        self.names = [instance_name(stage, i) for stage in ORDER_STAGES for i in range(instances)]
        self.avoid = avoid
        self.ports = dict(zip(self.names, _ports(len(self.names), avoid, first_port), strict=True))
        self.env = env
        self.log_dir = log_dir
        self.host = host
        self.children: dict[str, Child] = {}
        #: Killed and not back yet; or killed for good.
        self.down: set[str] = set()
        self.gone: set[str] = set()
        #: One fault at a time per instance: a kill waits until the previous one's restart is done.
        self.turns = {name: asyncio.Lock() for name in self.names}
        partitions = {t.name: t.partitions for t in load_catalog().all_topics()}
        self.partitions = {stage: sum(partitions[t] for t in factory_inputs(stage)) for stage in ORDER_STAGES}

    def url(self, name: str, path: str) -> str:
        return f"http://{self.host}:{self.ports[name]}{path}"

    def claim_port(self, name: str) -> int:
        """The instance's /metrics port, drawn again if something else bound it meanwhile."""
        if not port_free(self.ports[name]):
            # Taken while the instance was down: a supervisor's new pod gets a new address too,
            # and the readiness probe must not reach whoever holds the old one.
            self.ports[name] = free_port({*self.avoid, *self.ports.values()})
        return self.ports[name]

    async def start(self, name: str) -> None:
        self.claim_port(name)
        env = {**self.env, "ORCHESTRATOR_INSTANCE_ID": name, "ORCHESTRATOR_HTTP_PORT": str(self.ports[name])}
        self.children[name] = await spawn(name, ["run", stage_of(name)], env, self.log_dir)

    async def start_all(self) -> None:
        """Start every instance not started yet, and wait until all are ready."""
        await self._start_ready(self.names)

    async def start_stage(self, stage: str) -> None:
        """Start the instances of one stage, and wait until they are ready."""
        await self._start_ready([name for name in self.names if stage_of(name) == stage])

    async def _start_ready(self, names: list[str]) -> None:
        for name in names:
            if name not in self.children:
                await self.start(name)
        await asyncio.gather(*(wait_ready(self.children[n], self.url(n, "/readyz"), 180) for n in names))

    async def kill(self, name: str, *, for_good: bool) -> None:
        child = self.children[name]
        (self.gone if for_good else self.down).add(name)
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGKILL)
        await child.process.wait()

    async def restart(self, name: str, *, delay_s: float, attempts: int = 10) -> None:
        """Start the instance again as a supervisor would: again and again until it is ready."""
        for attempt in range(1, attempts + 1):
            await self.start(name)
            try:
                await wait_ready(self.children[name], self.url(name, "/readyz"), 180)
            except ChildFailed:
                if attempt == attempts:
                    raise
                await asyncio.sleep(delay_s)
                continue
            self.down.discard(name)
            return

    def check(self) -> None:
        for name, child in self.children.items():
            if name not in self.down and name not in self.gone and child.process.returncode is not None:
                raise ChildFailed(f"{name} exited with {child.process.returncode}:\n{child.tail()}")

    def alive(self) -> list[str]:
        return [n for n in self.names if n not in self.down and n not in self.gone]

    @overload
    async def metric(
        self, session: aiohttp.ClientSession, family_name: str, *, strict: Literal[False] = False
    ) -> dict[str, float]: ...
    @overload
    async def metric(
        self, session: aiohttp.ClientSession, family_name: str, *, strict: Literal[True]
    ) -> dict[str, float] | None: ...
    async def metric(
        self, session: aiohttp.ClientSession, family_name: str, *, strict: bool = False
    ) -> dict[str, float] | None:
        """A gauge summed per stage over the live instances that answer; `strict`: None while any
        of them does not (a run is not idle until every process says so)."""
        names = self.alive()
        gauges = await asyncio.gather(
            *(stage_gauge(session, self.url(name, "/metrics"), family_name) for name in names)
        )
        out: dict[str, float] = {}
        for gauge in gauges:
            if gauge is None and strict:
                return None
            for stage, value in (gauge or {}).items():
                out[stage] = out.get(stage, 0.0) + value
        return out

    @property
    def metrics_at(self) -> str:
        """Where the instances serve /metrics, in a few words: `http://127.0.0.1:{8080-8081,8083-8089}/metrics`."""
        runs: list[list[int]] = []
        for port in sorted(self.ports.values()):
            if runs and port == runs[-1][-1] + 1:
                runs[-1].append(port)
            else:
                runs.append([port])
        parts = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
        where = parts[0] if len(parts) == 1 else "{" + ",".join(parts) + "}"
        return f"http://{self.host}:{where}/metrics"

    async def settled(self, session: aiohttp.ClientSession, stage: str) -> bool:
        """True when the live instances of `stage` own every partition of its inputs between them."""
        assigned = await self.metric(session, "orchestrator_partitions_assigned")
        return int(assigned.get(stage, 0)) == self.partitions[stage]

    async def stop_all(self) -> None:
        await asyncio.gather(*(c.stop(60) for n, c in self.children.items() if n not in self.gone))


def factory_inputs(stage: str) -> tuple[str, ...]:
    """The input topics of a stage, from the stage itself (one source of truth)."""
    from orchestrator.stages import build_stages

    return build_stages(stage)[0].inputs


__all__ = ["StageFleet", "factory_inputs", "stage_of"]
