"""`make faults`: orders through every stage while stage processes are SIGKILLed,
the broker is restarted and crashed, PostgreSQL crashes and a node closes; then
the guarantees are audited from the topics and the database.

Each stage instance is its own process (`orchestrator run STAGE`), with its own
instance id and /metrics port, in the stage's one consumer group. The
simulated OMS, nodes and carriers of `make run` are the outside world. The
servers are the run's own (so it may restart them) unless
KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL name others; then the server faults
are left out and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
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
from aiokafka.errors import KafkaError

from orchestrator.contract.common import NodeKind
from orchestrator.contract.network import NodeStatusChanged
from orchestrator.db.migrate import migrate
from orchestrator.faults.audit import INVENTORY, Audit, audit, collect_facts
from orchestrator.faults.plan import Fault, FaultBudget, FaultKind, fault_schedule
from orchestrator.infra import LocalKafka, LocalPostgres
from orchestrator.infra.ports import free_ports
from orchestrator.sim.live.behaviour import CarrierRates, NodeRates, ReturnRates
from orchestrator.sim.live.children import Child, ChildFailed
from orchestrator.sim.live.driver import LiveOptions, NetworkSize, sim_flags, start_outside_world
from orchestrator.sim.live.fleet import StageFleet, stage_of
from orchestrator.sim.live.observer import TopicObserver, end_offsets, watched_topics
from orchestrator.sim.live.oms import TrafficShape
from orchestrator.sim.live.processes import NETWORK, Closures, publish_network
from orchestrator.sim.live.publisher import Publisher
from orchestrator.sim.live.tally import LiveTally
from orchestrator.stages import ORDER_STAGES
from orchestrator.topics import apply_topics, load_catalog


@dataclass(frozen=True)
class FaultRunOptions:
    orders: int = 20_000
    rate: float = 40.0
    instances: int = 2
    budget: FaultBudget = field(default_factory=FaultBudget)
    seed: int = 7
    network: NetworkSize = field(default_factory=NetworkSize)
    #: How long a killed stage instance stays dead before its supervisor starts it again.
    restart_delay_s: float = 2.0
    #: How long a restarted broker or database stays down.
    server_down_s: float = 3.0
    drain_timeout_s: float = 600.0
    summary_path: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


@dataclass
class FaultRecord:
    fault: Fault
    injected_ms: int = 0
    #: Seconds until what the fault hit answered again (for a stage: its partitions are all owned again).
    back_s: float | None = None
    #: Seconds until an order placed after the fault had its first work order released.
    flow_s: float | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "at_s": self.fault.at_s,
            "kind": self.fault.kind.value,
            "restart": self.fault.restart,
            "fault": self.fault.describe(),
            "back_s": self.back_s,
            "flow_s": self.flow_s,
            "error": self.error,
        }


class RunServers:
    """The run's Kafka and PostgreSQL: its own (restartable) unless the environment names others."""

    def __init__(self, state_dir: Path) -> None:
        env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        env_db = os.environ.get("DATABASE_URL", "").strip()
        kafka_port, controller_port, postgres_port = free_ports(3)
        #: Ports the run's own servers listen on, which no stage instance may draw for its /metrics.
        self.ports = frozenset((kafka_port, controller_port, postgres_port))
        self.kafka = (
            None if env_kafka else LocalKafka(state_dir, port=kafka_port, controller_port=controller_port)
        )
        self.postgres = None if env_db else LocalPostgres(state_dir, port=postgres_port)
        self.bootstrap = env_kafka or (self.kafka.bootstrap if self.kafka else "")
        self.database_url = env_db or (self.postgres.database_url if self.postgres else "")
        #: One server fault at a time: a crash while the previous restart is still starting the broker
        #: would kill that start and blur both recoveries.
        self.turn = asyncio.Lock()

    async def start(self) -> None:
        await asyncio.gather(
            *(asyncio.to_thread(s.start, 180) for s in (self.kafka, self.postgres) if s is not None)
        )

    async def stop(self) -> None:
        await asyncio.gather(
            *(asyncio.to_thread(s.stop) for s in (self.kafka, self.postgres) if s is not None)
        )

    async def restart_broker(self, *, crash: bool, down_s: float) -> None:
        assert self.kafka is not None
        await asyncio.to_thread(self.kafka.kill if crash else self.kafka.stop)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.kafka.start, 180)

    async def crash_database(self, down_s: float) -> None:
        assert self.postgres is not None
        await asyncio.to_thread(self.postgres.kill)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.postgres.start, 180)


async def _wait(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(0.25)


async def _inject(
    record: FaultRecord,
    options: FaultRunOptions,
    servers: RunServers,
    fleet: StageFleet,
    session: aiohttp.ClientSession,
) -> None:
    fault = record.fault
    began = time.monotonic()
    record.injected_ms = int(time.time() * 1000)
    try:
        if fault.kind is FaultKind.KILL_STAGE:
            stage = stage_of(fault.target)
            async with fleet.turns[fault.target]:
                began, record.injected_ms = time.monotonic(), int(time.time() * 1000)
                await fleet.kill(fault.target, for_good=not fault.restart)
                if fault.restart:
                    await asyncio.sleep(options.restart_delay_s)
                    await fleet.restart(fault.target, delay_s=options.restart_delay_s)
            await _wait(lambda: fleet.settled(session, stage), 180, f"{stage}'s partitions owned again")
        elif fault.kind in (FaultKind.RESTART_BROKER, FaultKind.CRASH_BROKER, FaultKind.CRASH_DATABASE):
            async with servers.turn:
                began, record.injected_ms = time.monotonic(), int(time.time() * 1000)
                if fault.kind is FaultKind.CRASH_DATABASE:
                    await servers.crash_database(options.server_down_s)
                else:
                    await servers.restart_broker(
                        crash=fault.kind is FaultKind.CRASH_BROKER, down_s=options.server_down_s
                    )
        else:
            change = NodeStatusChanged(
                node_id=fault.target,
                open=fault.kind is FaultKind.REOPEN_NODE,
                reason="fault injection: node "
                + ("reopened" if fault.kind is FaultKind.REOPEN_NODE else "closed"),
                changed_at=datetime.now(UTC),
            )
            await _publish_until_sent(servers.bootstrap, change)
        record.back_s = round(time.monotonic() - began, 2)
    except Exception as exc:  # a fault that could not be injected is reported, not fatal
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        record.error = f"{type(exc).__name__}: {first_line}"


async def _publish_until_sent(bootstrap: str, change: NodeStatusChanged, timeout_s: float = 180) -> None:
    """The network admin's message goes out even if the broker is restarting just then."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with Publisher(bootstrap, "faults/network-admin") as out:
                await out.send(NETWORK, change)
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


def flow_recovery_s(tally: LiveTally, injected_ms: int) -> float | None:
    """Seconds from the fault until the first order placed after it got a work order released."""
    released = [
        tally.released_ms[o]
        for o, t in tally.created_ms.items()
        if t >= injected_ms and o in tally.released_ms and o not in tally.held
    ]
    return round((min(released) - injected_ms) / 1000, 2) if released else None


async def run_faults(
    options: FaultRunOptions, state_dir: Path, *, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """The whole fault-injection run; returns the report (with `audit.problems` empty when all held)."""
    run_dir = state_dir / "faults" / f"run-{options.run_id}"
    log_dir = run_dir / "logs"
    servers = RunServers(run_dir)
    say(
        f"run {options.run_id}: starting Kafka and PostgreSQL" if servers.kafka else "using the given servers"
    )
    await servers.start()
    try:
        return await _run(options, servers, log_dir, say)
    finally:
        await servers.stop()
        if servers.kafka is not None:
            # The broker's data is large and of no use after the audit; the logs stay.
            shutil.rmtree(run_dir / "kafka" / "data", ignore_errors=True)


async def _run(
    options: FaultRunOptions, servers: RunServers, log_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    bootstrap, database_url = servers.bootstrap, servers.database_url
    await apply_topics(bootstrap, load_catalog())
    await migrate(database_url)
    budget = options.budget
    if servers.kafka is None:
        budget = FaultBudget(**{**budget.__dict__, "broker_restarts": 0})
    if servers.postgres is None:
        budget = FaultBudget(**{**budget.__dict__, "database_restarts": 0})
    network = options.network.build()
    dcs = sorted(n.node_id for n in network.nodes if n.kind is NodeKind.DC)
    duration = options.orders / options.rate
    schedule = fault_schedule(
        duration_s=duration,
        stages=list(ORDER_STAGES),
        instances=options.instances,
        budget=budget,
        node_to_close=dcs[0] if dcs else None,
        seed=options.seed,
    )
    records = [FaultRecord(f) for f in schedule]
    live = LiveOptions(
        orders=options.orders,
        network=options.network,
        # Flash sales off: the rate is the load the run was asked for, so recovery times compare.
        traffic=TrafficShape(rate=options.rate, flash_sale_every_s=0),
        nodes=NodeRates(),
        carriers=CarrierRates(),
        # Returns on, more of them than make run's: the returns stage is killed too, and the audit
        # counts each return's statuses, return work orders and restocks.
        returns=ReturnRates(returned=0.15),
        # Store power cuts stay on: the outside world misbehaves while the orchestrator's processes die.
        closures=Closures(),
        run_id=options.run_id,
    )
    stores = frozenset(n.node_id for n in network.nodes if n.kind is NodeKind.STORE)
    tally = LiveTally(order_prefix=f"LIVE-{options.run_id}-", stores=stores)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_STATE_DIR": str(log_dir.parent),
    }
    start = await end_offsets(bootstrap, watched_topics(load_catalog()))
    # The audit reads the stock changes too (it counts the restocks of returns); the live view does not.
    audited_from = start | await end_offsets(bootstrap, [INVENTORY])
    started_at = datetime.now(UTC)
    await publish_network(bootstrap, network)
    fleet = StageFleet(options.instances, env, log_dir, avoid=servers.ports)
    say(
        f"{len(fleet.names)} stage processes ({options.instances} of each of {len(ORDER_STAGES)} stages), "
        f"{options.orders} orders at {options.rate:g}/s (~{duration:.0f} s), {len(schedule)} faults; "
        f"logs in {log_dir}"
    )
    sims: dict[str, Child] = {}
    observer = TopicObserver(bootstrap, start, tally)
    observer_stop = asyncio.Event()
    observing: asyncio.Task[None] | None = None
    injections: list[asyncio.Task[None]] = []
    began = time.monotonic()
    try:
        await fleet.start_all()
        await start_outside_world(database_url, network, started_at, sim_flags(live), env, log_dir, sims, say)
        observing = asyncio.create_task(observer.run(observer_stop))
        began = time.monotonic()
        say("traffic started; faults follow the schedule")
        async with aiohttp.ClientSession() as session:
            pending = list(records)
            last_line, oms_done_at, last_records, last_change = 0.0, None, 0, time.monotonic()
            at_rest_since: float | None = None
            wound_down = False
            while True:
                await asyncio.sleep(0.5)
                elapsed = time.monotonic() - began
                while pending and pending[0].fault.at_s <= elapsed:
                    record = pending.pop(0)
                    say(f"[{elapsed:6.1f}s] fault: {record.fault.describe()}")
                    injections.append(asyncio.create_task(_inject(record, options, servers, fleet, session)))
                fleet.check()
                for name, child in sims.items():
                    code = child.process.returncode
                    if code is not None and (code != 0 or name != "sim-oms"):
                        raise ChildFailed(f"{name} exited with {code}:\n{child.tail()}")
                if observer.records != last_records:
                    last_records, last_change = observer.records, time.monotonic()
                if time.monotonic() - last_line >= 5:
                    last_line = time.monotonic()
                    done = sum(1 for r in records if r.back_s is not None or r.error)
                    say(
                        f"[{elapsed:6.1f}s] orders {len(tally.created_ms)}/{options.orders}, "
                        f"released {len(tally.released_ms)}, not at rest {len(tally.unsettled())}, "
                        f"faults {done}/{len(records)}, dead letters {sum(tally.dead_letters.values())}"
                    )
                if sims["sim-oms"].process.returncode == 0 and oms_done_at is None:
                    oms_done_at = time.monotonic()
                if oms_done_at is None or pending or not all(t.done() for t in injections):
                    continue
                if not wound_down:
                    # No more restocks or store power cuts: what is in flight finishes, then all rests.
                    with contextlib.suppress(ProcessLookupError):
                        sims["sim-nodes"].process.send_signal(signal.SIGUSR1)
                    wound_down = True
                    say(
                        f"[{elapsed:6.1f}s] all orders placed and faults done; the simulated world winds down"
                    )
                if tally.unsettled():
                    at_rest_since = None
                elif at_rest_since is None:
                    at_rest_since = time.monotonic()
                # The outside world never falls silent (restocks release back-orders, stores close):
                # every order at rest for a few seconds is the end, without waiting for quiet topics.
                if at_rest_since is not None and (
                    time.monotonic() - at_rest_since >= 2 or time.monotonic() - last_change >= 3
                ):
                    break
                if time.monotonic() - oms_done_at > options.drain_timeout_s:
                    say("drain timeout: auditing with orders still moving")
                    break
    finally:
        for task in injections:
            task.cancel()
        await asyncio.gather(*injections, return_exceptions=True)
        for name in ("sim-oms", "sim-nodes", "sim-carriers"):
            if name in sims:
                await sims[name].stop()
        observer_stop.set()
        if observing is not None:
            await asyncio.gather(observing, return_exceptions=True)
        await fleet.stop_all()
    elapsed = time.monotonic() - began
    for record in records:
        if record.injected_ms:
            record.flow_s = flow_recovery_s(tally, record.injected_ms)
    say("auditing the topics and the database")
    result: Audit = audit(await collect_facts(bootstrap, database_url, audited_from, tally.order_prefix))
    report: dict[str, Any] = {
        "run_id": options.run_id,
        "orders": options.orders,
        "rate": options.rate,
        "instances": options.instances,
        "servers_owned": servers.kafka is not None and servers.postgres is not None,
        "elapsed_s": round(elapsed, 1),
        "kills": sum(1 for r in records if r.fault.kind is FaultKind.KILL_STAGE),
        "stages_killed": sorted(
            {stage_of(r.fault.target) for r in records if r.fault.kind is FaultKind.KILL_STAGE}
        ),
        "faults": [r.as_dict() for r in records],
        "audit": result.as_dict(),
        "latency_ms": tally.summary()["latency_ms"],
        "logs": str(log_dir),
    }
    if options.summary_path is not None:
        options.summary_path.parent.mkdir(parents=True, exist_ok=True)
        options.summary_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report


__all__ = ["FaultRecord", "FaultRunOptions", "flow_recovery_s", "run_faults"]
