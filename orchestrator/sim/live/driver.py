"""`make run`: the orchestrator's eight stages and the simulated outside world,
each its own process, watched live until Ctrl-C or until `--orders N` are done.

The driver publishes the network (as the network admin would), starts the
stages (`orchestrator run all`), waits until they are ready and the stock
counts are applied, then starts the simulated nodes, carriers and OMS
(`orchestrator sim ...`). It reads the topics for the live view and, at the
end, stops the simulators, lets the stages finish, and prints the summary.
Every child's log goes to a file under the state folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.live import Live

from orchestrator.contract.common import NodeKind
from orchestrator.infra.ports import free_port
from orchestrator.runtime.pause import sleep_unless
from orchestrator.settings import Settings
from orchestrator.sim.geography import SimNetwork, build_network
from orchestrator.sim.live.behaviour import CarrierRates, NodeRates, ReturnRates
from orchestrator.sim.live.children import Child, ChildFailed, check_port_free, spawn, wait_file, wait_ready
from orchestrator.sim.live.fleet import StageFleet
from orchestrator.sim.live.observer import (
    TopicObserver,
    end_offsets,
    exception_resolutions,
    stock_loaded,
    watched_topics,
)
from orchestrator.sim.live.oms import TrafficShape, in_flash_sale
from orchestrator.sim.live.processes import Closures, publish_network
from orchestrator.sim.live.tally import LiveTally
from orchestrator.sim.live.view import live_table, progress_line, summary_text
from orchestrator.topics import load_catalog

#: The promise API's port in `make run` (another is picked when it is taken).
PROMISE_PORT = 8082


@dataclass(frozen=True)
class NetworkSize:
    seed: int = 7
    dcs: int = 5
    stores: int = 40
    skus: int = 200

    def build(self) -> SimNetwork:
        return build_network(seed=self.seed, dcs=self.dcs, stores=self.stores, skus=self.skus)

    def args(self) -> list[str]:
        return [
            "--seed",
            str(self.seed),
            "--dcs",
            str(self.dcs),
            "--stores",
            str(self.stores),
            "--skus",
            str(self.skus),
        ]


@dataclass(frozen=True)
class LiveOptions:
    """What a live run does; the defaults are what `make run` shows a new user."""

    orders: int | None = None
    network: NetworkSize = field(default_factory=NetworkSize)
    traffic: TrafficShape = field(default_factory=TrafficShape)
    nodes: NodeRates = field(default_factory=NodeRates)
    carriers: CarrierRates = field(default_factory=CarrierRates)
    #: Customers sending a unit of a delivered parcel back (the carriers' process plays them).
    returns: ReturnRates = field(default_factory=ReturnRates)
    closures: Closures = field(default_factory=Closures)
    summary_path: Path | None = None
    #: With --orders: stop when nothing moved for this long (orders may wait on a closed store).
    quiet_s: float = 12.0
    #: With --orders: stop at the latest this long after the last order was placed.
    drain_timeout_s: float = 180.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


def sim_flags(options: LiveOptions) -> dict[str, list[str]]:
    t, n, c, z = options.traffic, options.nodes, options.carriers, options.closures
    net = options.network.args()
    orders = ["--orders", str(options.orders)] if options.orders is not None else []
    return {
        "sim-nodes": [
            "sim",
            "nodes",
            *net,
            "--reject-rate",
            str(n.reject),
            "--short-pick-rate",
            str(n.short_pick),
            "--node-cancel-rate",
            str(n.node_cancel),
            "--step-seconds",
            str(n.step_seconds),
            "--closures-per-minute",
            str(z.per_minute),
            "--closure-seconds",
            str(z.seconds),
        ],
        "sim-carriers": [
            "sim",
            "carriers",
            "--seed",
            str(options.network.seed),
            "--delay-rate",
            str(c.delay),
            "--exception-rate",
            str(c.exception),
            "--lost-rate",
            str(c.lost),
            "--return-rate",
            str(options.returns.returned),
            "--step-seconds",
            str(c.step_seconds),
        ],
        "sim-oms": [
            "sim",
            "oms",
            *net,
            *orders,
            "--run-id",
            options.run_id,
            "--rate",
            str(t.rate),
            "--amend-rate",
            str(t.amend),
            "--cancel-rate",
            str(t.cancel),
            "--hold-rate",
            str(t.hold),
            "--flash-sale-every",
            str(t.flash_sale_every_s),
        ],
    }


async def start_outside_world(
    database_url: str,
    network: SimNetwork,
    counted_since: datetime,
    flags: dict[str, list[str]],
    env: dict[str, str],
    log_dir: Path,
    children: dict[str, Child],
    say: Callable[[str], None],
    timeout_s: float = 180,
) -> None:
    """Once reserve has applied every stock count: the simulated nodes and carriers (each listening),
    then the OMS (when `flags` has one: a benchmark is its own OMS), as children of the run."""
    pairs = [(s.node_id, s.sku) for s in network.inventory]
    deadline = time.monotonic() + timeout_s
    while await stock_loaded(database_url, pairs, counted_since) < len(pairs):
        if time.monotonic() > deadline:
            raise ChildFailed(f"reserve did not apply the stock counts within {timeout_s:.0f} s")
        await asyncio.sleep(0.3)
    say("stages ready, stock counted; starting the simulated " + ", ".join(n[4:] for n in flags))
    for name in ("sim-nodes", "sim-carriers"):
        ready = log_dir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        children[name] = await spawn(name, [*flags[name], "--ready-file", str(ready)], env, log_dir)
        await wait_file(children[name], ready, timeout_s)
    if "sim-oms" in flags:
        children["sim-oms"] = await spawn("sim-oms", flags["sim-oms"], env, log_dir)


async def run_live(
    settings: Settings,
    options: LiveOptions,
    *,
    stop: asyncio.Event | None = None,
    console: Console | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the stages and the simulators until `stop` (or the orders are done); returns the report."""
    stop = stop or asyncio.Event()
    console = console or Console()
    loop = asyncio.get_running_loop()
    # SIGHUP too: closing the terminal ends the run the same orderly way as Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    check_port_free(settings.http_host, settings.http_port)
    network = options.network.build()
    stores = frozenset(n.node_id for n in network.nodes if n.kind is NodeKind.STORE)
    tally = LiveTally(order_prefix=f"LIVE-{options.run_id}-", stores=stores)
    bootstrap = settings.kafka
    log_dir = settings.state_dir / "logs" / f"run-{options.run_id}"
    env = {
        **os.environ,
        # The children reach the same broker the same way (a password file's path, not the password).
        **settings.kafka_security.env(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
        "DATABASE_URL": settings.database_url,
        "ORCHESTRATOR_STATE_DIR": str(settings.state_dir),
    }

    start = await end_offsets(bootstrap, watched_topics(load_catalog()))
    started_at = datetime.now(UTC)
    sent = await publish_network(bootstrap, network)
    say(
        f"network: {len(network.nodes)} nodes, {len(network.services)} carrier services, "
        f"{len(network.inventory)} stock counts ({sent} events); run {options.run_id}; logs in {log_dir}"
    )
    children: dict[str, Child] = {}
    observer = TopicObserver(bootstrap, start, tally)
    observer_stop = asyncio.Event()
    observing: asyncio.Task[None] | None = None
    began = time.monotonic()
    # A process per stage, as deployed: in one process the nine stages share one event loop, which
    # held orders back at 5 orders/s (see fleet.py).
    fleet = StageFleet(
        1,
        env,
        log_dir,
        host=settings.http_host,
        first_port=settings.http_port,
        avoid=frozenset({PROMISE_PORT}),
    )
    try:
        await fleet.start_all()
        say(f"stages ready, each its own process; metrics on {fleet.metrics_at}")
        # The storefront's question before an order exists: the promise API runs beside the stages.
        promise_port = PROMISE_PORT if _port_free(settings.http_host, PROMISE_PORT) else free_port()
        children["promise"] = await spawn(
            "promise", ["promise", "serve", "--port", str(promise_port)], env, log_dir
        )
        await wait_ready(children["promise"], f"http://{settings.http_host}:{promise_port}/healthz", 120)
        say(f"promise API on http://{settings.http_host}:{promise_port} (POST /v1/promise; see the README)")
        await start_outside_world(
            settings.database_url, network, started_at, sim_flags(options), env, log_dir, children, say
        )
        observing = asyncio.create_task(observer.run(observer_stop))
        began = time.monotonic()
        await _watch(options, children, fleet, tally, observer, stop, console, settings, began)
    finally:
        # The outside world stops first, then the stages finish what they hold; the stages stop
        # even if something before fails, so no process outlives the run.
        try:
            for name in ("sim-oms", "sim-nodes", "sim-carriers"):
                if name in children:
                    await children[name].stop()
            if observing is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_drain(observer), 30)
        finally:
            observer_stop.set()
            if observing is not None:
                await asyncio.gather(observing, return_exceptions=True)
            if "promise" in children:
                await children["promise"].stop()
            codes = await asyncio.gather(*(child.stop(60) for child in fleet.children.values()))
            for (name, child), code in zip(fleet.children.items(), codes, strict=True):
                if code not in (0, -signal.SIGTERM):
                    say(f"{name} exited with {code}; see {child.log_path}")
    elapsed = time.monotonic() - began
    report = {
        "run_id": options.run_id,
        "order_prefix": tally.order_prefix,
        "elapsed_s": round(elapsed, 1),
        "summary": tally.summary(),
        "unsettled_orders": sorted(tally.unsettled()),
        "resolutions": await exception_resolutions(settings.database_url, tally.order_prefix),
        "metrics": {name: fleet.url(name, "/metrics") for name in fleet.names},
        "metrics_at": fleet.metrics_at,
        "logs": str(log_dir),
    }
    if options.summary_path is not None:
        options.summary_path.parent.mkdir(parents=True, exist_ok=True)
        options.summary_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


def _port_free(host: str, port: int) -> bool:
    try:
        check_port_free(host, port)
    except ChildFailed:
        return False
    return True


async def _drain(observer: TopicObserver) -> None:
    # The broker's end offsets are polled: nothing signals "read to the end".
    while not await observer.caught_up():  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def _watch(
    options: LiveOptions,
    children: dict[str, Child],
    fleet: StageFleet,
    tally: LiveTally,
    observer: TopicObserver,
    stop: asyncio.Event,
    console: Console,
    settings: Settings,
    began: float,
) -> None:
    """Show the run until Ctrl-C, or with --orders until every order has come to rest."""
    oms = children["sim-oms"]
    resolutions: dict[str, dict[str, int]] = {}
    last_records, last_change = 0, time.monotonic()
    oms_done_at: float | None = None
    last_line = 0.0
    frame: Live | None = (
        Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None
    )
    async with aiohttp.ClientSession() as session:
        with frame or contextlib.nullcontext():
            tick = 0
            while not stop.is_set():
                await sleep_unless(stop, 1.0)
                tick += 1
                for name, child in children.items():
                    if child.process.returncode not in (None, 0) or (
                        name != "sim-oms" and child.process.returncode == 0
                    ):
                        raise ChildFailed(f"{name} exited with {child.process.returncode}:\n{child.tail()}")
                fleet.check()
                waiting = await fleet.metric(session, "orchestrator_consumer_lag_messages", strict=True)
                lag = None if waiting is None else {stage: int(n) for stage, n in waiting.items()}
                if tick % 3 == 0:
                    resolutions = await exception_resolutions(settings.database_url, tally.order_prefix)
                now_ms = int(time.time() * 1000)
                elapsed = time.monotonic() - began
                snapshot = {
                    "elapsed_s": elapsed,
                    "received_per_s": tally.rate("received", now_ms),
                    "released_per_s": tally.rate("released", now_ms),
                    "flash_sale": in_flash_sale(options.traffic, elapsed),
                    "lag": lag,
                    "summary": tally.summary(),
                    "resolutions": resolutions,
                }
                if frame is not None:
                    frame.update(live_table(snapshot))
                elif time.monotonic() - last_line >= 5:
                    print(progress_line(snapshot), flush=True)
                    last_line = time.monotonic()
                if observer.records != last_records:
                    last_records, last_change = observer.records, time.monotonic()
                if oms.process.returncode == 0 and oms_done_at is None:
                    oms_done_at = time.monotonic()
                if oms_done_at is None:
                    continue
                quiet = time.monotonic() - last_change
                idle = lag is not None and sum(lag.values()) == 0
                settled = not tally.unsettled()
                if idle and ((settled and quiet >= 3) or quiet >= options.quiet_s):
                    return
                if time.monotonic() - oms_done_at > options.drain_timeout_s:
                    return


__all__ = [
    "ChildFailed",
    "LiveOptions",
    "NetworkSize",
    "run_live",
    "sim_flags",
    "start_outside_world",
    "summary_text",
]
