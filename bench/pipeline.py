"""The end-to-end benchmark: every stage on the real Kafka and PostgreSQL, and in the same run the
pass-through ceiling, decision quality and peak memory.

    python -m bench.pipeline                 # the full run (about 10 minutes)
    python -m bench.pipeline --quick         # a smoke run: small and short, not a measurement
    python -m bench.pipeline --instances 2   # two processes of every stage

Every stage is its own process (`orchestrator run STAGE`, as deployed), the
simulated nodes and carriers of `make run` answer work orders and ship them,
and this process is the OMS: it places orders on `oms.orders.v1` and reads,
read_committed, when each one's first work order is released, when it is
settled another way (back-ordered, held, rejected) and when it is delivered.

Phases, one after the other in one run:
1. warm-up, then the maximum: the OMS keeps `--window` orders in flight
   (placed, and neither delivered nor settled another way: back-ordered,
   held, rejected, cancelled), so every stage, the last ones too, runs flat
   out without a backlog that grows for ever: the rate is one the whole
   flow sustains. Released/s is counted over `--measure-seconds`;
   delivered/s over a window of the same length that starts later by about
   the time an order takes from release to delivery.
2. latency: orders placed at a fixed pace, at 25%, 50% and 75% of the
   measured maximum; OMS event → work order released, p50/p95/p99.
3. peak RSS of every stage process, and where the CPU went in phase 1.
4. the ceiling: the stages stop, and a chain of no-work relays over the
   same number of hops (5: ingest → validate → decide → reserve → release),
   the same partitions and the same orders runs on the same broker.
5. decision quality: `orchestrator simulate` for the default policy, the
   baselines and the offline optimum, on fixed seeds.

Writes bench-results/pipeline.json, pipeline.md and pipeline.png (latency
percentiles against offered load), and prints the markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import ceiling, procfs
from bench.procfs import peak_rss_kib
from orchestrator.contract.envelope import Envelope, encode, header_map
from orchestrator.db.migrate import migrate
from orchestrator.faults.driver import RunServers
from orchestrator.runtime.kafka_client import client_kwargs
from orchestrator.runtime.worker import BATCH_PHASES
from orchestrator.sim.live.behaviour import CarrierRates, NodeRates, ReturnRates
from orchestrator.sim.live.children import Child, ChildFailed
from orchestrator.sim.live.driver import LiveOptions, NetworkSize, sim_flags, start_outside_world
from orchestrator.sim.live.fleet import StageFleet
from orchestrator.sim.live.observer import end_offsets
from orchestrator.sim.live.processes import Closures, publish_network
from orchestrator.sim.orders import OrderMaker
from orchestrator.topics import apply_topics, load_catalog

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench-results"

ORDERS_TOPIC = "oms.orders.v1"
#: What the tracker reads: first releases, plans that release nothing, and what the OMS is told.
TRACKED = ("wms.work-orders.v1", "orchestrator.plans.v1", "oms.status.v1")
#: Plan outcomes that release nothing now: the order leaves the window without a release.
UNRELEASED_OUTCOMES = frozenset({"backorder", "hold_for_stock", "unfulfillable"})
#: States the OMS is told that end an order's wait for a release.
SETTLED_STATES = frozenset({"rejected", "cancelled", "back_ordered", "on_hold", "needs_attention"})
#: Shares of the maximum the latency is measured at; 0.5 is the one the targets name.
LOAD_FRACTIONS = (0.25, 0.5, 0.75)
HOPS = 5

TARGETS = {
    "orders_per_s": 1500.0,
    "p99_ms_at_half": 100.0,
    "ceiling_ratio": 0.5,
    "gap_to_optimum": 0.02,
    "below_closest": 0.10,
    "peak_rss_mib": 150.0,
}


@dataclass(frozen=True)
class Sizes:
    warmup_s: float
    measure_s: float
    paced_s: float
    window: int
    ceiling_events: int
    simulate_orders: int
    quality_seeds: int
    load_fractions: tuple[float, ...] = LOAD_FRACTIONS


FULL = Sizes(
    warmup_s=40,
    measure_s=60,
    paced_s=20,
    window=1000,
    ceiling_events=40_000,
    simulate_orders=60,
    quality_seeds=10,
)
#: Seconds a simulated node or carrier step takes in a smoke run (0.6 and 0.8 s otherwise).
QUICK_STEP_S = 0.15
QUICK = Sizes(
    warmup_s=4,
    measure_s=6,
    paced_s=3,
    window=150,
    ceiling_events=1_500,
    simulate_orders=12,
    quality_seeds=1,
    # Half the maximum only: each share paces and drains for 5 to 15 s, and a smoke run checks the parts run.
    load_fractions=(0.5,),
)


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    instances: int
    seed: int
    out: Path
    quick: bool
    skip_ceiling: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short: a smoke run")
    parser.add_argument("--instances", type=int, default=1, help="processes of every stage (default 1)")
    parser.add_argument("--window", type=int, help="orders in flight during the maximum phase")
    parser.add_argument("--measure-seconds", type=float, help="length of the maximum phase's count")
    parser.add_argument("--paced-seconds", type=float, help="length of each latency phase")
    parser.add_argument("--ceiling-events", type=int, help="events through the relay chain")
    parser.add_argument("--skip-ceiling", action="store_true", help="leave out the relay chain")
    parser.add_argument("--seed", type=int, default=7, help="seed of the network and the orders")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder of the results ({DEFAULT_OUT})"
    )
    ns = parser.parse_args(argv)
    base = QUICK if ns.quick else FULL
    sizes = replace(
        base,
        measure_s=ns.measure_seconds or base.measure_s,
        paced_s=ns.paced_seconds or base.paced_s,
        window=ns.window or base.window,
        ceiling_events=ns.ceiling_events or base.ceiling_events,
    )
    if ns.instances < 1 or sizes.window < 1 or sizes.measure_s <= 0 or sizes.paced_s <= 0:
        parser.error("--instances, --window, --measure-seconds and --paced-seconds must be positive")
    return Options(sizes, ns.instances, ns.seed, ns.out, ns.quick, ns.skip_ceiling)


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- the OMS and the tracker


@dataclass
class Tracker:
    """What happened to each of the benchmark's orders, as a downstream reader sees it (monotonic s)."""

    prefix: str
    sent: dict[str, float] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)
    settled_otherwise: dict[str, float] = field(default_factory=dict)
    delivered: dict[str, float] = field(default_factory=dict)
    done: int = 0
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def in_flight(self) -> int:
        """Placed and neither delivered nor settled another way: the whole flow still owes them work."""
        return len(self.sent) - self.done

    def awaiting_release(self) -> int:
        return len(self.sent) - len(self.released) - len(self.settled_otherwise)

    def note(self, topic: str, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes) -> None:
        order_id = key.decode(errors="replace") if key else ""
        if not order_id.startswith(self.prefix):
            return
        now = time.monotonic()
        event_type = header_map(headers).get("ce_type", "")
        if topic == "wms.work-orders.v1":
            if event_type.startswith("workorder.released.") and order_id not in self.released:
                self.released[order_id] = now
            return
        if topic == "orchestrator.plans.v1":
            if not event_type.startswith("plan.decided."):
                return
            plan = orjson.loads(value)
            if plan.get("plan_version") == 1 and plan.get("outcome") in UNRELEASED_OUTCOMES:
                self._settle(order_id, now)
            return
        if event_type.startswith("order.status_changed."):
            state = orjson.loads(value).get("state")
            if state == "delivered":
                if order_id not in self.delivered and order_id not in self.settled_otherwise:
                    self.done += 1
                self.delivered.setdefault(order_id, now)
            elif state in SETTLED_STATES:
                self._settle(order_id, now)

    def _settle(self, order_id: str, now: float) -> None:
        if order_id not in self.delivered and order_id not in self.settled_otherwise:
            self.settled_otherwise[order_id] = now
            self.done += 1

    async def run(self, bootstrap: str, start: dict[TopicPartition, int], stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_kwargs(bootstrap),
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
            consumer.assign(list(start))
            for tp, offset in start.items():
                consumer.seek(tp, offset)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batches.items():
                    for r in records:
                        self.note(tp.topic, r.key, r.headers, r.value or b"{}")
                if batches:
                    self.changed.set()
        except Exception as exc:
            self.error = exc  # raised by the phase that waits on it: a dead reader is not a slow pipeline
            self.changed.set()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


class Oms:
    """Places the benchmark's orders: the simulator's order mix, placed now, one producer."""

    def __init__(self, bootstrap: str, maker: OrderMaker, tracker: Tracker) -> None:
        self.maker = maker
        self.tracker = tracker
        self.producer = AIOKafkaProducer(
            **client_kwargs(bootstrap), acks="all", enable_idempotence=True, linger_ms=5
        )
        self.pending: list[asyncio.Future[Any]] = []

    async def place(self, phase: str) -> None:
        n = len(self.tracker.sent)
        order = self.maker.make(f"{self.tracker.prefix}{phase}-{n:07d}", datetime.now(UTC))
        key, value, headers = encode(Envelope.new(order, source="bench/oms"))
        self.tracker.sent[order.order_id] = time.monotonic()
        self.pending.append(await self.producer.send(ORDERS_TOPIC, key=key, value=value, headers=headers))
        if len(self.pending) >= 500:
            await self.settle_sends()

    async def settle_sends(self) -> None:
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)


# --------------------------------------------------------------------------- phases


@dataclass
class Run:
    options: Options
    bootstrap: str
    tracker: Tracker
    oms: Oms
    fleet: StageFleet
    sims: dict[str, Child]

    def check(self) -> None:
        self.fleet.check()
        for name, child in self.sims.items():
            if child.process.returncode is not None:
                raise ChildFailed(f"{name} exited with {child.process.returncode}:\n{child.tail()}")
        if self.tracker.error is not None:
            raise RuntimeError(f"the tracker failed: {self.tracker.error!r}") from self.tracker.error


async def closed_loop(run: Run, phase: str, seconds: float, report: Callable[[float], None]) -> None:
    """Keep `window` orders in flight for `seconds`: the pipeline's own pace sets the rate."""
    tracker, window = run.tracker, run.options.sizes.window
    deadline = time.monotonic() + seconds
    next_report = time.monotonic() + 5
    while (now := time.monotonic()) < deadline:
        room = window - tracker.in_flight()
        for _ in range(min(room, 250)):
            await run.oms.place(phase)
        if room <= 0:
            tracker.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tracker.changed.wait(), 0.1)
        if now >= next_report:
            run.check()
            report(deadline - now)
            next_report = now + 5
    await run.oms.settle_sends()


async def paced(run: Run, phase: str, rate: float, seconds: float) -> list[str]:
    """Place orders at `rate`/s on a fixed schedule for `seconds`; returns their ids."""
    total = max(1, round(rate * seconds))
    first = len(run.tracker.sent)
    started = time.monotonic()
    next_report = started + 5
    for i in range(total):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        await run.oms.place(phase)
        if time.monotonic() >= next_report:
            run.check()
            say(f"    {i + 1:,}/{total:,} placed, {run.tracker.in_flight():,} in flight")
            next_report += 5
    await run.oms.settle_sends()
    return list(run.tracker.sent)[first:]


async def drain(run: Run, timeout_s: float) -> None:
    """Wait until nothing is in flight (or `timeout_s`: the stragglers are reported, not waited for)."""
    deadline = time.monotonic() + timeout_s
    while run.tracker.in_flight() > 0 and time.monotonic() < deadline:
        run.check()
        await asyncio.sleep(0.2)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    return ceiling.percentile(sorted_values, q) if sorted_values else None


def count_between(times: Sequence[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t < end)


def per_second(times: Sequence[float], start: float, seconds: float) -> list[int]:
    buckets = [0] * max(1, int(seconds))
    for t in times:
        i = int(t - start)
        if 0 <= i < len(buckets):
            buckets[i] += 1
    return buckets


async def maximum(run: Run) -> dict[str, Any]:
    sizes, tracker = run.options.sizes, run.tracker
    say(f"  warm-up: {sizes.warmup_s:g} s with {sizes.window:,} orders in flight")
    await closed_loop(run, "warm", sizes.warmup_s, lambda left: None)
    released_before = len(tracker.released)
    deliver_lag = _median(
        [tracker.delivered[o] - tracker.released[o] for o in tracker.delivered if o in tracker.released]
    )
    # Delivered/s is counted over a window of the same length, later by about what delivery takes.
    offset = min(max(5.0, deliver_lag or 10.0), 30.0)
    say(
        f"  maximum: {sizes.measure_s:g} s counting releases, then {offset:.0f} s more for deliveries "
        f"({released_before:,} released in the warm-up)"
    )
    counters_before = await stage_counters(run.fleet)
    start = time.monotonic()
    cpu_before = procfs.snapshot()

    def report(left: float) -> None:
        elapsed = time.monotonic() - start
        released = count_between(list(tracker.released.values()), start, start + elapsed)
        say(
            f"    {elapsed:5.0f} s: {released / max(elapsed, 1e-9):,.0f} released/s, "
            f"{tracker.in_flight():,} in flight, {len(tracker.delivered):,} delivered so far"
        )

    await closed_loop(run, "max", sizes.measure_s, report)
    end = time.monotonic()
    cpu_after = procfs.snapshot()
    counters_after = await stage_counters(run.fleet)
    await closed_loop(run, "max", offset if not run.options.quick else 0.5, report)
    released_times = list(tracker.released.values())
    delivered_times = list(tracker.delivered.values())
    released = count_between(released_times, start, end)
    delivered = count_between(delivered_times, start + offset, end + offset)
    seconds = end - start
    cpu_seconds = procfs.used_between(cpu_before, cpu_after)
    return {
        "window": sizes.window,
        "seconds": round(seconds, 1),
        "released": released,
        "released_per_s": round(released / seconds, 1),
        "delivered_window_offset_s": round(offset, 1),
        "delivered": delivered,
        "delivered_per_s": round(delivered / seconds, 1),
        "released_per_second": per_second(released_times, start, seconds),
        "cpu": procfs.shares(cpu_seconds, seconds, os.cpu_count() or 1),
        "stages": batch_rows(counters_before, counters_after, seconds),
    }


async def stage_counters(fleet: StageFleet) -> dict[str, ceiling.BatchStats]:
    """Per stage, summed over its live instances: batches committed, seconds in them, events.

    Every stage has a row: one that has committed no batch yet (exceptions, early in a run, when
    nothing has failed) exports no batch series, and shows as 0 events/s, not as missing.
    """
    out: dict[str, ceiling.BatchStats] = {stage: ceiling.BatchStats() for stage in fleet.partitions}
    async with aiohttp.ClientSession() as http:
        for name in fleet.alive():
            for stage, stats in (
                await ceiling.batch_counters(http, fleet.url(name, "/metrics")) or {}
            ).items():
                out[stage] = out.get(stage, ceiling.BatchStats()) + stats
    return out


def batch_rows(
    before: dict[str, ceiling.BatchStats], after: dict[str, ceiling.BatchStats], seconds: float
) -> list[dict[str, Any]]:
    """Per stage between two scrapes: events/s, batches (one Kafka transaction each)/s, events per
    batch, mean ms per batch."""
    rows = []
    for stage, a in after.items():
        diff = ceiling.batch_difference(before.get(stage, ceiling.BatchStats()), a)
        rows.append(
            {
                "stage": stage,
                "events_per_s": round(diff.get("events", 0.0) / seconds, 1),
                "batches_per_s": round(diff.get("batches", 0.0) / seconds, 1),
                "events_per_batch": diff.get("events_per_batch"),
                "commit_ms": diff.get("commit_ms"),
                "slow_batches": diff.get("slow_batches"),
                **{f"{phase}_phase_ms": diff.get(f"{phase}_phase_ms") for phase in BATCH_PHASES},
            }
        )
    return sorted(rows, key=lambda r: -r["events_per_s"])


async def latency_at(run: Run, fraction: float, max_rate: float) -> dict[str, Any]:
    rate = max(1.0, max_rate * fraction)
    seconds = run.options.sizes.paced_s
    say(f"  latency at {fraction:.0%} of the maximum: {rate:,.1f} orders/s for {seconds:g} s")
    await drain(run, 45)
    before = await stage_counters(run.fleet)
    started = time.monotonic()
    ids = await paced(run, f"p{round(fraction * 100)}", rate, seconds)
    await drain(run, 45)
    # Over the pace and the drain after it, so the batches the slowest orders waited behind count.
    stages = batch_rows(before, await stage_counters(run.fleet), time.monotonic() - started)
    tracker = run.tracker
    latencies = sorted((tracker.released[o] - tracker.sent[o]) * 1000 for o in ids if o in tracker.released)
    otherwise = sum(1 for o in ids if o in tracker.settled_otherwise)
    row = {
        "fraction": fraction,
        "offered_per_s": round(rate, 1),
        "orders": len(ids),
        "released": len(latencies),
        "settled_otherwise": otherwise,
        "missing": len(ids) - len(latencies) - otherwise,
        "p50_ms": _round(percentile(latencies, 50)),
        "p95_ms": _round(percentile(latencies, 95)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(latencies[-1] if latencies else None),
        "stages": stages,
    }
    say(f"    p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms")
    return row


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def peak_rss(fleet: StageFleet, sims: dict[str, Child]) -> list[dict[str, Any]]:
    rows = []
    for name, child in [*fleet.children.items(), *sims.items()]:
        kib = peak_rss_kib(child.process.pid)
        rows.append({"process": name, "peak_rss_mib": round(kib / 1024, 1) if kib is not None else None})
    return rows


async def pipeline_phases(options: Options, servers: RunServers, log_dir: Path) -> dict[str, Any]:
    bootstrap, database_url = servers.bootstrap, servers.database_url
    await apply_topics(bootstrap, load_catalog())
    await migrate(database_url)
    network_size = NetworkSize(seed=options.seed)
    network = network_size.build()
    run_id = uuid.uuid4().hex[:6]
    live = LiveOptions(
        network=network_size,
        # A smoke run's orders are through in a few seconds of simulated work, not tens: its drains
        # wait for deliveries, and it checks that the parts run, not how long real nodes take.
        nodes=NodeRates(step_seconds=QUICK_STEP_S) if options.quick else NodeRates(),
        carriers=CarrierRates(step_seconds=QUICK_STEP_S) if options.quick else CarrierRates(),
        # No store power cuts: the benchmark measures the pipeline, not a network that keeps failing.
        closures=Closures(per_minute=0),
        # No returns: the load is the orders its own OMS places, the same as in earlier runs.
        returns=ReturnRates(returned=0.0),
        run_id=run_id,
    )
    flags = {k: v for k, v in sim_flags(live).items() if k != "sim-oms"}
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_STATE_DIR": str(log_dir.parent),
    }
    tracker = Tracker(prefix=f"BENCH-{run_id}-")
    start = await end_offsets(bootstrap, list(TRACKED))
    started_at = datetime.now(UTC)
    await publish_network(bootstrap, network)
    fleet = StageFleet(options.instances, env, log_dir)
    sims: dict[str, Child] = {}
    say(f"  {len(fleet.names)} stage processes ({options.instances} of each); logs in {log_dir}")
    stop_tracker = asyncio.Event()
    tracking: asyncio.Task[None] | None = None
    oms = Oms(bootstrap, OrderMaker(network, random.Random(options.seed)), tracker)
    try:
        await fleet.start_all()
        await start_outside_world(database_url, network, started_at, flags, env, log_dir, sims, say)
        tracking = asyncio.create_task(tracker.run(bootstrap, start, stop_tracker))
        await oms.producer.start()
        run = Run(options, bootstrap, tracker, oms, fleet, sims)
        say("phase 1: the maximum")
        top = await maximum(run)
        say(f"  {top['released_per_s']:,.1f} released/s, {top['delivered_per_s']:,.1f} delivered/s")
        say("phase 2: latency at a fixed pace")
        latency = [await latency_at(run, f, top["released_per_s"]) for f in options.sizes.load_fractions]
        memory = peak_rss(fleet, sims)
        return {
            "maximum": top,
            "latency": latency,
            "memory": memory,
            "orders_placed": len(tracker.sent),
            "orders_released": len(tracker.released),
            "orders_settled_otherwise": len(tracker.settled_otherwise),
            "orders_delivered": len(tracker.delivered),
        }
    finally:
        stop_tracker.set()
        with contextlib.suppress(Exception):
            await oms.producer.stop()
        if tracking is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tracking, 10)
        await asyncio.gather(*(c.stop(30) for c in sims.values()), return_exceptions=True)
        await fleet.stop_all()


# --------------------------------------------------------------------------- ceiling and decisions


def ceiling_on(bootstrap: str, options: Options, network_seed: int, log_dir: Path) -> dict[str, Any]:
    """The relay chain over the order path's hops and partitions, relaying orders of the same mix."""
    partitions = load_catalog().get(ORDERS_TOPIC).partitions
    network = NetworkSize(seed=network_seed).build()
    maker = OrderMaker(network, random.Random(network_seed + 1))

    def make_events(n: int, prefix: str) -> list[ceiling.Prepared]:
        return ceiling.prepare(maker.make(f"{prefix}-{i:07d}", datetime.now(UTC)) for i in range(n))

    run_id = uuid.uuid4().hex[:8]
    topics = [f"bench.ceiling.{run_id}.hop{i}" for i in range(HOPS + 1)]
    opts = ceiling.Options(
        hops=HOPS,
        partitions=partitions,
        events=options.sizes.ceiling_events,
        paced_seconds=options.sizes.paced_s,
        paced_fraction=0.5,
        bootstrap=bootstrap,
        out=options.out / "ceiling.json",
        quick=options.quick,
    )
    chain = ceiling.RelayChain(bootstrap, topics, log_dir, run_id)

    async def go() -> dict[str, Any]:
        await ceiling.create_topics(bootstrap, topics, partitions)
        try:
            return await ceiling.run_phases(opts, bootstrap, chain, topics, make_events)
        finally:
            with contextlib.suppress(Exception):
                await ceiling.delete_topics(bootstrap, topics)

    try:
        measured = asyncio.run(go())
    finally:
        chain.stop()
    measured.pop("batches", None)
    measured["paced"].pop("batches", None)
    measured["hops"] = HOPS
    measured["partitions"] = partitions
    measured["peak_rss_mib"] = [
        round(r.peak_rss_kib / 1024, 1) if r.peak_rss_kib is not None else None for r in chain.relays
    ]
    return measured


def decision_quality(options: Options) -> dict[str, Any]:
    """`orchestrator simulate` with the offline optimum on several seeds: one seed's stream is too
    small a sample to judge a policy by, and the optimum cannot be solved for a long one."""
    import orchestrator.policies as policies_package
    from orchestrator.domain.policy import load_policy
    from orchestrator.sim import build_network, order_stream
    from orchestrator.sim.simulate import format_table, simulate

    policy = load_policy(Path(policies_package.__file__).with_name("default.yaml"))
    seeds = [options.seed + i for i in range(options.sizes.quality_seeds)]
    rows: list[dict[str, Any]] = []
    first_table = ""
    for seed in seeds:
        network = build_network(seed=seed)
        orders = order_stream(network, seed=seed, count=options.sizes.simulate_orders)
        result = simulate(network, orders, [policy], seed=seed, optimum=True)
        if not first_table:
            first_table = format_table(result)
        by_name = {s.name: s for s in result.strategies}
        ours = by_name[policy.version].objective
        closest = by_name["closest-node-with-stock"].objective
        ranked = by_name["ranked-locations"].objective
        optimum = result.optimum.objective if result.optimum is not None else None
        rows.append(
            {
                "seed": seed,
                "orders": len(orders),
                "policy": round(ours, 2),
                "closest_node_with_stock": round(closest, 2),
                "ranked_locations": round(ranked, 2),
                "optimum": None if optimum is None else round(optimum, 2),
                "gap_to_optimum": None if not optimum else round(ours / optimum - 1, 4),
                "below_closest": round(1 - ours / closest, 4) if closest else None,
                # The most any policy could be below closest-node on this stream.
                "optimum_below_closest": round(1 - optimum / closest, 4) if optimum and closest else None,
            }
        )
    totals = {k: sum(r[k] for r in rows) for k in ("policy", "closest_node_with_stock")}
    solved = [r for r in rows if r["optimum"]]
    return {
        "policy": policy.version,
        "seeds": seeds,
        "orders_per_seed": options.sizes.simulate_orders,
        "rows": rows,
        "first_seed_table": first_table,
        # Over all seeds' orders together: a ratio of sums, not a mean of ratios.
        "gap_to_optimum": round(sum(r["policy"] for r in solved) / sum(r["optimum"] for r in solved) - 1, 4)
        if solved
        else None,
        "below_closest": round(1 - totals["policy"] / totals["closest_node_with_stock"], 4),
        # The same ratio for the optimum, over the seeds it solved: the bound no policy can pass.
        "optimum_below_closest": round(
            1 - sum(r["optimum"] for r in solved) / sum(r["closest_node_with_stock"] for r in solved), 4
        )
        if solved
        else None,
        "median_gap_to_optimum": statistics.median(r["gap_to_optimum"] for r in solved) if solved else None,
        "median_below_closest": statistics.median(r["below_closest"] for r in rows),
    }


# --------------------------------------------------------------------------- report


def _mark(ok: bool | None) -> str:
    return "?" if ok is None else ("met" if ok else "**not met**")


#: (target key, what it is, at least (True) or at most, how a value is shown)
TARGET_ROWS: tuple[tuple[str, str, bool, str], ...] = (
    ("orders_per_s", "orders/s end to end (to released)", True, "{:,.1f}"),
    ("p99_ms_at_half", "p99 ms at 50% of the maximum", False, "{:,.1f}"),
    ("ceiling_ratio", "share of the pass-through ceiling", True, "{:.1%}"),
    ("gap_to_optimum", "decision cost above the offline optimum", False, "{:+.1%}"),
    ("below_closest", "decision cost below closest-node-with-stock", True, "{:.1%}"),
    ("peak_rss_mib", "peak RSS of a stage process, MiB", False, "{:.0f}"),
)


def measured_against_targets(result: dict[str, Any]) -> dict[str, float | None]:
    half = next((r for r in result["pipeline"]["latency"] if r["fraction"] == 0.5), None)
    quality = result["decision_quality"]
    rss = [r["peak_rss_mib"] for r in result["pipeline"]["memory"] if r["process"].split("-")[0] != "sim"]
    return {
        "orders_per_s": result["pipeline"]["maximum"]["released_per_s"],
        "p99_ms_at_half": half["p99_ms"] if half else None,
        "ceiling_ratio": result.get("ceiling_ratio"),
        "gap_to_optimum": quality.get("gap_to_optimum"),
        "below_closest": quality.get("below_closest"),
        "peak_rss_mib": max((r for r in rss if r is not None), default=None),
    }


def targets(result: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, wanted, measured, met) for every target of the issue; None where nothing was measured."""
    measured = measured_against_targets(result)
    rows: list[tuple[str, str, str, bool | None]] = []
    for key, name, at_least, shown in TARGET_ROWS:
        want, value = TARGETS[key], measured[key]
        wanted = f"{'≥' if at_least else '≤'} {shown.format(want).lstrip('+')}"
        if value is None:
            rows.append((name, wanted, "?", None))
        else:
            got = shown.format(value)
            bound = result["decision_quality"].get("optimum_below_closest")
            if key == "below_closest" and bound is not None:
                got += f" (the optimum itself: {bound:.1%})"
            rows.append((name, wanted, got, value >= want if at_least else value <= want))
    return rows


def render(result: dict[str, Any]) -> str:
    p = result["pipeline"]
    top = p["maximum"]
    lines = [
        f"### End-to-end benchmark ({result['started_at']}, commit {result['commit']})",
        "",
        f"{result['machine']['cpus']} CPUs, Python {result['machine']['python']}; Kafka and PostgreSQL "
        f"on the same machine; {result['instances']} process(es) per stage; "
        f"{'QUICK smoke run, not a measurement' if result['quick'] else 'full run'}.",
        "",
        "| target | wanted | measured | |",
        "|---|---:|---:|---|",
        *(f"| {name} | {want} | {got} | {_mark(ok)} |" for name, want, got, ok in targets(result)),
        "",
        "**Throughput** (the OMS keeps "
        f"{top['window']:,} orders in flight; counted over {top['seconds']:.0f} s after a warm-up):",
        "",
        "| | orders/s |",
        "|---|---:|",
        f"| OMS event → first work order released | {top['released_per_s']:,.1f} |",
        f"| OMS event → delivered (window {top['delivered_window_offset_s']:.0f} s later) "
        f"| {top['delivered_per_s']:,.1f} |",
    ]
    c = result.get("ceiling")
    if c is not None:
        lines += [
            f"| pass-through ceiling: {c['hops']} no-work relays, {c['partitions']} partitions "
            f"| {c['events_per_s']:,.1f} |",
            f"| pipeline ÷ ceiling | {result['ceiling_ratio']:.1%} |",
        ]
    lines += [
        "",
        "**Latency**, OMS event → first work order released, orders placed at a fixed pace:",
        "",
        "| load | orders/s | orders | released | p50 ms | p95 ms | p99 ms | max ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["latency"]:
        lines.append(
            f"| {r['fraction']:.0%} | {r['offered_per_s']:,.1f} | {r['orders']:,} | {r['released']:,} "
            f"| {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} |"
        )
    if c is not None:
        cp = c["paced"]
        lines.append(
            f"| ceiling 50% | {cp['rate_per_s']:,.1f} | {cp['events']:,} | {cp['delivered']:,} "
            f"| {cp['p50_ms']} | {cp['p95_ms']} | {cp['p99_ms']} | {cp['max_ms']} |"
        )
    lines += [
        "",
        f"**Where the CPU went** at the maximum ({result['machine']['cpus']} cores; cores = CPU seconds "
        "per second):",
        "",
        "| processes | cores | share of the machine |",
        "|---|---:|---:|",
        *(f"| {r['group']} | {r['cores']:.2f} | {r['share']:.0%} |" for r in top["cpu"]),
        "",
        "**Batches per stage** at the maximum (a batch is one partition's records of one poll, handled in one"
        " Kafka transaction and, for stages with a database, one PostgreSQL transaction):",
        "",
        *batch_table(top["stages"]),
        "",
        *paced_batch_lines(p["latency"]),
        "**Peak RSS** per process (MiB):",
        "",
        "| process | peak RSS MiB |",
        "|---|---:|",
        *(f"| {r['process']} | {r['peak_rss_mib']} |" for r in p["memory"]),
        "",
        *quality_lines(result["decision_quality"]),
    ]
    return "\n".join(lines)


def batch_table(rows: list[dict[str, Any]]) -> list[str]:
    return [
        "| stage | events/s | batches/s | events/batch | ms/batch "
        f"| batches over {ceiling.SLOW_BATCH_S:g} s | of a batch, ms: handle / produce / offsets / commit |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['stage']} | {r['events_per_s']:,.1f} | {r['batches_per_s']:,.1f} "
            f"| {r['events_per_batch']} | {r['commit_ms']} | {_count(r.get('slow_batches'))} "
            f"| {' / '.join(str(r.get(f'{phase}_phase_ms', '?')) for phase in BATCH_PHASES)} |"
            for r in rows
        ),
    ]


def paced_batch_lines(latency: list[dict[str, Any]]) -> list[str]:
    """Batches per stage at 50% of the maximum: the stages whose slow batches make the latency tail."""
    half = next((r for r in latency if r["fraction"] == 0.5 and r.get("stages")), None)
    if half is None:
        return []
    return [
        "**Batches per stage at 50% of the maximum** (over the pace and the drain after it):",
        "",
        *batch_table(half["stages"]),
        "",
    ]


def _share(value: float | None, sign: str = "") -> str:
    return "?" if value is None else f"{value:{sign}.1%}"


def _count(value: float | None) -> str:
    return "?" if value is None else f"{value:,.0f}"


def quality_lines(q: dict[str, Any]) -> list[str]:
    lines = [
        f"**Decision quality**: `orchestrator simulate` with the offline optimum (HiGHS), "
        f"{q['orders_per_seed']} orders on each of seeds {', '.join(map(str, q['seeds']))}; "
        "objective cost (lower is better):",
        "",
        f"| seed | {q['policy']} | closest node with stock | ranked locations | optimum "
        "| gap to optimum | below closest | optimum below closest |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['seed']} | {r['policy']:.2f} | {r['closest_node_with_stock']:.2f} "
            f"| {r['ranked_locations']:.2f} | {r['optimum']} | {_share(r['gap_to_optimum'], '+')} "
            f"| {r['below_closest']:.1%} | {_share(r.get('optimum_below_closest'))} |"
        )
    median_gap = _share(q["median_gap_to_optimum"], "+")
    lines += [
        f"| all (sums) | | | | | {_share(q['gap_to_optimum'], '+')} | {q['below_closest']:.1%} "
        f"| {_share(q.get('optimum_below_closest'))} |",
        f"| median seed | | | | | {median_gap} | {q['median_below_closest']:.1%} | |",
        "",
        "The optimum's own distance below closest-node-with-stock is the most any policy can reach on "
        "these streams.",
        "",
        f"Seed {q['seeds'][0]} in full:",
        "",
        q["first_seed_table"],
    ]
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["pipeline"]["latency"] if r["p50_ms"] is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [r["offered_per_s"] for r in rows]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-"), ("p99_ms", "^-")):
        left.plot(x, [r[key] for r in rows], style, label=key.split("_")[0])
    top = result["pipeline"]["maximum"]["released_per_s"]
    left.axvline(top, color="grey", linestyle="--", label=f"maximum {top:,.0f}/s")
    left.set_xlabel("offered load, orders/s")
    left.set_ylabel("OMS event → work order released, ms")
    left.set_title("Latency against offered load")
    left.legend()
    left.grid(alpha=0.3)
    series = result["pipeline"]["maximum"]["released_per_second"]
    right.plot(range(len(series)), series, "-", label="pipeline, released/s")
    c = result.get("ceiling")
    if c is not None:
        right.axhline(
            c["events_per_s"], color="red", linestyle=":", label=f"ceiling {c['events_per_s']:,.0f}/s"
        )
    right.set_xlabel("seconds into the maximum phase")
    right.set_ylabel("orders/s")
    right.set_title("Throughput at the maximum")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"bench.pipeline, commit {result['commit']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    log_dir = work / "logs"
    log_dir.mkdir(parents=True)
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "started_at": started_at,
        "commit": commit(),
        "quick": options.quick,
        "instances": options.instances,
        "sizes": options.sizes.__dict__,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    try:
        with ceiling.sigterm_as_exit():
            servers = RunServers(work)
            say("starting Kafka and PostgreSQL" if servers.kafka else "using the given Kafka and PostgreSQL")
            asyncio.run(servers.start())
            try:
                result["pipeline"] = asyncio.run(pipeline_phases(options, servers, log_dir))
                if not options.skip_ceiling:
                    say("phase 4: the pass-through ceiling on the same broker")
                    result["ceiling"] = ceiling_on(servers.bootstrap, options, options.seed, log_dir)
                    result["ceiling_ratio"] = round(
                        result["pipeline"]["maximum"]["released_per_s"] / result["ceiling"]["events_per_s"], 4
                    )
            finally:
                asyncio.run(servers.stop())
    except Exception as exc:
        print(f"pipeline: failed: {exc!r}\n(logs kept in {log_dir})", file=sys.stderr, flush=True)
        return 1
    say("phase 5: decision quality")
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet):
        result["decision_quality"] = decision_quality(options)
    text = render(result)
    say("")
    say(text)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "pipeline.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (options.out / "pipeline.md").write_text(text + "\n")
    plot(result, options.out / "pipeline.png")
    say(f"\nwrote {options.out / 'pipeline.json'}, pipeline.md and pipeline.png")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
