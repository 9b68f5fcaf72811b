"""The pass-through ceiling: how fast events cross a chain of relays that do no work.

A relay (orchestrator.stages.relay) decodes, validates and re-emits every event
through the same runtime as a real stage: consumer group, one Kafka transaction
per partition batch, read_committed. A chain of them over as many topic hops as
the order path (ingest → validate → decide → reserve → release: 5) is the
upper bound the real pipeline is compared against: whatever a stage does on
top of that is the price of its work.

Each relay is its own OS process (`python -m orchestrator.cli run relay ...`),
as deployed, so the numbers include every process's own event loop, clients
and serialisation, all sharing this machine's cores with the broker.

Two phases, both against a chain that has already passed a warm-up (so process
start, group joins and transactional producer set-up are not measured):

1. throughput: N events published as fast as a pipelined producer goes (far
   faster than the chain, so a backlog forms at the first hop and the chain
   runs flat out); events/s = N / (last arrival on the final topic - first send),
   and, for reference, the rate over the middle half of the arrivals;
2. latency: events published at a fixed paced rate (a fraction of phase 1's
   rate) for a few seconds; latency = arrival at a read_committed reader of the
   final topic - publish time, matched by `ce_correlationid` (relays emit new
   envelopes with new ids, but the runtime keeps the correlation id of the
   first event along the chain).

Uses KAFKA_BOOTSTRAP_SERVERS (or --bootstrap) when given, else a throw-away
local broker. Prints a markdown table and writes bench-results/ceiling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from bench.procfs import peak_rss_kib
from orchestrator.contract.base import EventPayload
from orchestrator.contract.envelope import Envelope, Headers, encode
from orchestrator.contract.examples import example
from orchestrator.infra.ports import free_ports
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.kafka_client import client_kwargs
from orchestrator.runtime.worker import BATCH_PHASES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench-results" / "ceiling.json"
CORRELATION_HEADER = "ce_correlationid"

FULL = {"hops": 5, "events": 80_000, "paced_seconds": 10.0}
QUICK = {"hops": 2, "events": 2_000, "paced_seconds": 3.0}


@dataclass(frozen=True)
class Options:
    hops: int
    partitions: int
    events: int
    paced_seconds: float
    paced_fraction: float
    bootstrap: str | None
    out: Path
    quick: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ceiling",
        description="Throughput and latency of a chain of no-work relay processes (the ceiling).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--hops", type=int, help=f"topic hops, one relay each (default {FULL['hops']})")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of every topic (default 6)")
    parser.add_argument(
        "--events", type=int, help=f"events in the throughput phase (default {FULL['events']})"
    )
    parser.add_argument(
        "--paced-seconds", type=float, help=f"length of the latency phase (default {FULL['paced_seconds']:g})"
    )
    parser.add_argument(
        "--paced-fraction",
        type=float,
        default=0.5,
        help="latency phase rate as a fraction of the measured throughput (default 0.5)",
    )
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        help="Kafka to use (default: $KAFKA_BOOTSTRAP_SERVERS, else a temporary local broker)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    ns = parser.parse_args(argv)
    sizes = QUICK if ns.quick else FULL
    opts = Options(
        hops=ns.hops if ns.hops is not None else int(sizes["hops"]),
        partitions=ns.partitions,
        events=ns.events if ns.events is not None else int(sizes["events"]),
        paced_seconds=ns.paced_seconds if ns.paced_seconds is not None else float(sizes["paced_seconds"]),
        paced_fraction=ns.paced_fraction,
        bootstrap=ns.bootstrap,
        out=ns.out,
        quick=ns.quick,
    )
    if opts.hops < 1 or opts.partitions < 1 or opts.events < 1 or opts.paced_seconds <= 0:
        parser.error("--hops, --partitions, --events and --paced-seconds must be positive")
    if not 0 < opts.paced_fraction <= 1:
        parser.error("--paced-fraction must be in (0, 1]")
    return opts


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Prepared:
    """An encoded event: its id (which is also its correlation id) and its record."""

    event_id: str
    key: bytes
    value: bytes
    headers: Headers


def prepare(payloads: Iterable[EventPayload]) -> list[Prepared]:
    """Each payload as the OMS would send it: a new envelope, encoded once, before anything is timed."""
    out: list[Prepared] = []
    for payload in payloads:
        env = Envelope.new(payload, source="bench/oms")
        key, value, headers = encode(env)
        out.append(Prepared(env.id, key, value, headers))
    return out


def prepare_orders(n: int, prefix: str) -> list[Prepared]:
    """`n` realistic order.created.v1 events, one order each (so keys spread over every partition)."""
    base = example("order.created.v1")
    return prepare(base.model_copy(update={"order_id": f"{prefix}-{i:07d}"}) for i in range(n))


# --------------------------------------------------------------------------- processes


@dataclass
class Relay:
    index: int
    source: str
    target: str
    http_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    peak_rss_kib: int | None = None


class RelayChain:
    """One `orchestrator run relay` process per hop; stop() is safe to call at any time, twice.

    `run relay` names every relay `relay`, so the chain's relays share one consumer group. Each
    subscribes to its own topic, so each still gets all of its topic's partitions; the only cost
    is a rebalance of the group per joining relay, all of them over before the warm-up ends.
    """

    def __init__(self, bootstrap: str, topics: Sequence[str], log_dir: Path, run_id: str) -> None:
        self.bootstrap = bootstrap
        self.run_id = run_id
        ports = free_ports(len(topics) - 1)
        self.relays = [
            Relay(i, topics[i], topics[i + 1], ports[i], log_dir / f"relay-{i}.log")
            for i in range(len(topics) - 1)
        ]

    def start(self) -> None:
        for relay in self.relays:
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "ORCHESTRATOR_INSTANCE_ID": f"bench-{self.run_id}-{relay.index}",
                "PYTHONUNBUFFERED": "1",
            }
            with relay.log_path.open("ab") as log:
                command = [sys.executable, "-m", "orchestrator.cli", "run", "relay"]
                command += ["--input", relay.source, "--output", relay.target]
                command += ["--http-port", str(relay.http_port)]
                relay.proc = subprocess.Popen(
                    command,
                    env=env,
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )

    def check_alive(self) -> None:
        for relay in self.relays:
            if relay.proc is not None and relay.proc.poll() is not None:
                raise RuntimeError(
                    f"relay {relay.index} ({relay.source} -> {relay.target}) exited with "
                    f"{relay.proc.returncode}; last lines of {relay.log_path}:\n{_tail(relay.log_path)}"
                )

    def stop(self, timeout: float = 20.0) -> None:
        running = [r for r in self.relays if r.proc is not None and r.proc.poll() is None]
        # Peak RSS is only readable while the process exists, so it is taken just before stopping.
        for relay in running:
            assert relay.proc is not None
            relay.peak_rss_kib = peak_rss_kib(relay.proc.pid)
        for relay in running:
            assert relay.proc is not None
            with contextlib.suppress(ProcessLookupError):
                relay.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for relay in running:
            assert relay.proc is not None
            try:
                relay.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    relay.proc.kill()
                relay.proc.wait(10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@contextlib.contextmanager
def kafka_for(bootstrap: str | None) -> Iterator[tuple[str, bool]]:
    """(bootstrap, is_temporary): the given broker, or a local one that is removed afterwards."""
    if bootstrap:
        yield bootstrap, False
        return
    from orchestrator.infra import LocalKafka

    state = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    kafka_port, controller_port = free_ports(2)
    kafka = LocalKafka(state, port=kafka_port, controller_port=controller_port)
    say(f"starting a temporary local Kafka in {state} ...")
    try:
        kafka.start(timeout=120)
        yield kafka.bootstrap, True
    finally:
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the finally blocks stop the relays instead of orphaning them."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- kafka


async def create_topics(bootstrap: str, topics: Sequence[str], partitions: int) -> None:
    """The chain's topics plus the dead-letter topics of those a relay reads (a stage refuses to start
    without them), then wait until every partition has a leader."""
    names = [*topics, *(dead_letter_topic(t) for t in topics[:-1])]
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        pending = set(names)
        deadline = time.monotonic() + 30
        while pending:
            for t in await admin.describe_topics(sorted(pending)):
                parts = t["partitions"]
                if t["error_code"] == 0 and len(parts) == partitions and all(p["leader"] >= 0 for p in parts):
                    pending.discard(t["topic"])
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"topics without leaders after 30 s: {', '.join(sorted(pending))}")
            if pending:
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    names = [*topics, *(dead_letter_topic(t) for t in topics[:-1])]
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def new_producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_kwargs(bootstrap),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
    )


@dataclass
class Reader:
    """Reads the final topic (read_committed) from the start and notes when each story first arrives."""

    bootstrap: str
    topic: str
    partitions: int
    #: correlation id -> phase name, registered before the phase publishes
    phase_of: dict[str, str] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    strangers: int = 0
    error: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._read(stop)
        except Exception as exc:
            # Kept for the waiting phase to raise: a dead reader must not look like a slow chain.
            self.error = exc

    async def _read(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.bootstrap),
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.monotonic()
                for records in batches.values():
                    for rec in records:
                        self._note(rec.headers, now)
        finally:
            await consumer.stop()

    def _note(self, headers: Sequence[tuple[str, bytes]], now: float) -> None:
        cid = next((v.decode() for k, v in headers if k == CORRELATION_HEADER), None)
        phase = self.phase_of.get(cid) if cid is not None else None
        if cid is None or phase is None:
            self.strangers += 1
            return
        if cid in self.arrived:
            self.duplicates += 1
            return
        self.arrived[cid] = now
        self.counts[phase] = self.counts.get(phase, 0) + 1

    def expect(self, phase: str, events: Sequence[Prepared]) -> None:
        for e in events:
            self.phase_of[e.event_id] = phase

    def delivered(self, phase: str) -> int:
        return self.counts.get(phase, 0)


async def wait_delivered(
    reader: Reader, chain: RelayChain, phase: str, expected: int, timeout: float, label: str
) -> None:
    """Wait for `expected` arrivals of `phase`, printing progress every second."""
    started = time.monotonic()
    deadline = started + timeout
    next_report = started + 1.0
    last_count = 0
    while reader.delivered(phase) < expected:
        chain.check_alive()
        if reader.error is not None:
            raise RuntimeError(f"the reader of the final topic failed: {reader.error!r}") from reader.error
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(
                f"{label}: only {reader.delivered(phase):,} of {expected:,} events arrived in {timeout:.0f} s"
            )
        if now >= next_report:
            count = reader.delivered(phase)
            say(f"  {label}: {count:,} / {expected:,} delivered ({count - last_count:,}/s)")
            last_count = count
            next_report += 1.0
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class BatchStats:
    """Cumulative batch counters, from /metrics."""

    batches: float = 0.0
    commit_seconds: float = 0.0
    events: float = 0.0
    #: Batches under SLOW_BATCH_S: the rest are the ones a latency tail waits behind.
    fast: float = 0.0
    #: Seconds in each of the runtime's batch phases (BATCH_PHASES).
    phases: Mapping[str, float] = field(default_factory=dict)

    def __add__(self, other: BatchStats) -> BatchStats:
        return BatchStats(
            self.batches + other.batches,
            self.commit_seconds + other.commit_seconds,
            self.events + other.events,
            self.fast + other.fast,
            {p: self.phases.get(p, 0.0) + other.phases.get(p, 0.0) for p in BATCH_PHASES},
        )


#: A batch slower than this (a histogram bound of the runtime's batch metric) is counted as slow.
SLOW_BATCH_S = 0.5


_BATCH_SAMPLES = {
    "orchestrator_batch_commit_seconds_count": "batches",
    "orchestrator_batch_commit_seconds_sum": "commit_seconds",
    "orchestrator_events_consumed_total": "events",
}


async def batch_counters(http: aiohttp.ClientSession, metrics_url: str) -> dict[str, BatchStats] | None:
    """One process's batch counters per `stage` label; None when it does not answer."""
    try:
        async with http.get(metrics_url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    values: dict[str, dict[str, float]] = {}
    phases: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            stage = sample.labels.get("stage", "?")
            if sample.name == "orchestrator_batch_phase_seconds_sum":
                phase = sample.labels.get("phase", "?")
                into = phases.setdefault(stage, {})
                into[phase] = into.get(phase, 0.0) + sample.value
                continue
            field_name = _BATCH_SAMPLES.get(sample.name)
            if (
                sample.name == "orchestrator_batch_commit_seconds_bucket"
                and float(sample.labels.get("le", "nan")) == SLOW_BATCH_S
            ):
                field_name = "fast"
            if field_name is not None:
                counts = values.setdefault(stage, {})
                counts[field_name] = counts.get(field_name, 0.0) + sample.value
    return {stage: BatchStats(**counts, phases=phases.get(stage, {})) for stage, counts in values.items()}


async def scrape(chain: RelayChain) -> list[BatchStats | None]:
    """Every relay's batch counters; differences between two scrapes describe the phase in between."""
    out: list[BatchStats | None] = []
    async with aiohttp.ClientSession() as http:
        for relay in chain.relays:
            counters = await batch_counters(http, f"http://127.0.0.1:{relay.http_port}/metrics")
            out.append(None if counters is None else sum(counters.values(), BatchStats()))
    return out


def batch_difference(before: BatchStats | None, after: BatchStats | None) -> dict[str, float]:
    """Batches, mean events per batch and mean ms to commit one between two scrapes ({} if unknown)."""
    if after is None or before is None or after.batches <= before.batches:
        return {}
    n = after.batches - before.batches
    return {
        "batches": n,
        "events": after.events - before.events,
        "events_per_batch": round((after.events - before.events) / n, 1),
        "commit_ms": round((after.commit_seconds - before.commit_seconds) / n * 1000, 1),
        "slow_batches": n - (after.fast - before.fast),
        # Mean ms per batch in each phase; they add up to a little less than commit_ms.
        **{
            f"{phase}_phase_ms": round(
                (after.phases.get(phase, 0.0) - before.phases.get(phase, 0.0)) / n * 1000, 1
            )
            for phase in BATCH_PHASES
        },
    }


def batch_summary(before: list[BatchStats | None], after: list[BatchStats | None]) -> list[dict[str, float]]:
    """Per relay: `batch_difference` between two scrapes."""
    return [batch_difference(b, a) for b, a in zip(before, after, strict=True)]


async def wait_ready(chain: RelayChain, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for relay in chain.relays:
            while True:
                chain.check_alive()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"http://127.0.0.1:{relay.http_port}/readyz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"relay {relay.index} not ready after {timeout:.0f} s")
                await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- phases


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def publish_all(bootstrap: str, topic: str, events: Sequence[Prepared]) -> None:
    producer = new_producer(bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=e.key, value=e.value, headers=e.headers) for e in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def publish_paced(
    bootstrap: str, topic: str, events: Sequence[Prepared], rate: float, reader: Reader, chain: RelayChain
) -> dict[str, float]:
    """Publish `events` at `rate`/s on a fixed schedule; returns event id -> send time."""
    sent: dict[str, float] = {}
    producer = new_producer(bootstrap, linger_ms=0)
    await producer.start()
    try:
        futures = []
        started = time.monotonic()
        next_report = started + 1.0
        i = 0
        while i < len(events):
            now = time.monotonic()
            due = min(len(events), int((now - started) * rate) + 1)
            while i < due:
                e = events[i]
                sent[e.event_id] = time.monotonic()
                futures.append(await producer.send(topic, key=e.key, value=e.value, headers=e.headers))
                i += 1
            if now >= next_report:
                chain.check_alive()
                say(f"  latency: {i:,} sent, {reader.delivered('paced'):,} delivered")
                next_report += 1.0
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


#: Makes `n` events whose order ids start with the prefix: the ceiling relays what it is given.
EventMaker = Callable[[int, str], list[Prepared]]


async def run_phases(
    opts: Options,
    bootstrap: str,
    chain: RelayChain,
    topics: Sequence[str],
    make_events: EventMaker = prepare_orders,
) -> dict[str, Any]:
    prepare = make_events
    reader = Reader(bootstrap, topics[-1], opts.partitions)
    stop_reader = asyncio.Event()
    reader_task: asyncio.Task[None] | None = None
    try:
        warmup = prepare(20 * opts.partitions, f"WARM-{chain.run_id}")
        bulk = prepare(opts.events, f"BULK-{chain.run_id}")
        reader.expect("warmup", warmup)
        reader.expect("throughput", bulk)

        say(f"starting {len(chain.relays)} relay processes ...")
        chain.start()
        await wait_ready(chain)
        reader_task = asyncio.create_task(reader.run(stop_reader))
        # The warm-up touches every partition of every hop, so each relay has joined its group and set up
        # its transactional producers before anything is timed.
        await publish_all(bootstrap, topics[0], warmup)
        await wait_delivered(reader, chain, "warmup", len(warmup), 120, "warm-up")

        say(f"throughput: {opts.events:,} events through {opts.hops} hops ...")
        before_bulk = await scrape(chain)
        first_send = time.monotonic()
        await publish_all(bootstrap, topics[0], bulk)
        published = time.monotonic()
        await wait_delivered(
            reader, chain, "throughput", len(bulk), max(120.0, opts.events / 100), "throughput"
        )
        arrivals = sorted(reader.arrived[e.event_id] for e in bulk)
        seconds = arrivals[-1] - first_send
        # The middle half of the arrivals is the chain at full stride: past the ramp-up, where the
        # publisher still competes for the CPUs, and before the drain, where the first relays run
        # out of work and leave theirs to the last ones.
        lo, hi = len(arrivals) // 4, 3 * len(arrivals) // 4
        steady = (hi - lo) / (arrivals[hi] - arrivals[lo]) if arrivals[hi] > arrivals[lo] else None
        rate = opts.events / seconds
        after_bulk = await scrape(chain)
        took = published - first_send
        say(f"  {rate:,.0f} events/s ({opts.events:,} in {seconds:.1f} s; publishing took {took:.1f} s)")

        paced_rate = max(1.0, rate * opts.paced_fraction)
        paced = prepare(max(1, round(paced_rate * opts.paced_seconds)), f"PACE-{chain.run_id}")
        reader.expect("paced", paced)
        say(f"latency: {paced_rate:,.0f} events/s for {opts.paced_seconds:g} s ...")
        sent = await publish_paced(bootstrap, topics[0], paced, paced_rate, reader, chain)
        with contextlib.suppress(TimeoutError):
            await wait_delivered(reader, chain, "paced", len(paced), 60, "latency")
        after_paced = await scrape(chain)
        latencies = sorted(
            (reader.arrived[eid] - t) * 1000 for eid, t in sent.items() if eid in reader.arrived
        )
        return {
            "events": opts.events,
            "seconds": round(seconds, 3),
            "events_per_s": round(rate, 1),
            "steady_events_per_s": round(steady, 1) if steady is not None else None,
            "publish_seconds": round(published - first_send, 3),
            "paced": {
                "rate_per_s": round(paced_rate, 1),
                "seconds": opts.paced_seconds,
                "events": len(paced),
                "delivered": len(latencies),
                "p50_ms": round(percentile(latencies, 50), 1),
                "p95_ms": round(percentile(latencies, 95), 1),
                "p99_ms": round(percentile(latencies, 99), 1),
                "max_ms": round(latencies[-1], 1) if latencies else None,
                "batches": batch_summary(after_bulk, after_paced),
            },
            "batches": batch_summary(before_bulk, after_bulk),
            "duplicates": reader.duplicates,
        }
    finally:
        stop_reader.set()
        if reader_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader_task, 10)


# --------------------------------------------------------------------------- report


def _number(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "?"


def render(result: dict[str, Any]) -> str:
    p = result["paced"]
    lines = [
        "### Ceiling: chain of no-work relays (one process per hop)",
        "",
        "| hops | partitions | events | events/s | p50 ms | p95 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result['hops']} | {result['partitions']} | {result['events']:,} | "
        f"{result['events_per_s']:,.0f} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} |",
        "",
        f"events/s: all {result['events']:,} events from the first send to the last arrival "
        f"(publishing them took {result['publish_seconds']:.1f} s); at full stride (middle half of "
        f"the arrivals) {_number(result['steady_events_per_s'])} events/s.",
        "",
        f"Latency at {p['rate_per_s']:,.0f} events/s ({result['paced_fraction']:.0%} of the maximum) for "
        f"{p['seconds']:g} s: {p['delivered']:,} of {p['events']:,} delivered. "
        f"Duplicates seen: {result['duplicates']}.",
        "",
        "Per relay process (batch = one partition's records of one poll, one Kafka transaction):",
        "",
        "| relay | peak RSS MiB | events/batch (max) | commit ms (max) | events/batch (paced) "
        "| commit ms (paced) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["relays"]:
        rss = f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] is not None else "?"
        bulk, paced = r["batches_throughput"], r["batches_paced"]
        lines.append(
            f"| {r['index']} → {r['index'] + 1} | {rss} | {bulk.get('events_per_batch', '?')} | "
            f"{bulk.get('commit_ms', '?')} | {paced.get('events_per_batch', '?')} | "
            f"{paced.get('commit_ms', '?')} |"
        )
    lines.append("")
    lines.append(
        f"{result['machine']['cpus']} CPUs, Python {result['machine']['python']}, Kafka: {result['kafka']}"
    )
    return "\n".join(lines)


async def _run_async(
    opts: Options, bootstrap: str, chain: RelayChain, topics: Sequence[str]
) -> dict[str, Any]:
    await create_topics(bootstrap, topics, opts.partitions)
    return await run_phases(opts, bootstrap, chain, topics)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    topics = [f"bench.ceiling.{run_id}.hop{i}" for i in range(opts.hops + 1)]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-ceiling-logs-"))
    try:
        with sigterm_as_exit(), kafka_for(opts.bootstrap) as (bootstrap, temporary):
            chain = RelayChain(bootstrap, topics, log_dir, run_id)
            say(f"ceiling: {opts.hops} hops x {opts.partitions} partitions on {bootstrap}")
            try:
                measured = asyncio.run(_run_async(opts, bootstrap, chain, topics))
            finally:
                chain.stop()
                if not temporary:
                    # A shared broker should not keep a run's topics around.
                    with contextlib.suppress(Exception):
                        asyncio.run(delete_topics(bootstrap, topics))
    except Exception as exc:
        print(f"ceiling: failed: {exc}\n(relay logs kept in {log_dir})", file=sys.stderr, flush=True)
        return 1
    shutil.rmtree(log_dir, ignore_errors=True)
    bulk_batches = measured.pop("batches")
    paced_batches = measured["paced"].pop("batches")
    result: dict[str, Any] = {
        "benchmark": "ceiling",
        "started_at": started_at,
        "quick": opts.quick,
        "hops": opts.hops,
        "partitions": opts.partitions,
        "paced_fraction": opts.paced_fraction,
        **measured,
        "relays": [
            {
                "index": r.index,
                "input": r.source,
                "output": r.target,
                "peak_rss_mib": round(r.peak_rss_kib / 1024, 1) if r.peak_rss_kib is not None else None,
                "batches_throughput": bulk_batches[r.index],
                "batches_paced": paced_batches[r.index],
            }
            for r in chain.relays
        ],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "kafka": "temporary local broker" if temporary else bootstrap,
    }
    say("")
    say(render(result))
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    say(f"\nwrote {opts.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
