"""deploy/prometheus checked with the real tools, and the metrics it relies on checked live.

promtool checks the scrape config and the rules and runs the rules' unit tests. A real Prometheus
(Debian's, as `.ci/install-prometheus` installs it) then scrapes every stage running in one process
on the real Kafka and PostgreSQL, and the promise service, while orders go through them, and must
have data for every metric the README's "Observability" table documents: the table is read from
the README, so the documentation and this test cannot drift apart. The live run covers each
documented metric for real: a shadow policy, an operator's breaker override, a duplicate and a
dead letter at ingest, a split, a back-order, two orders racing for the last unit while reserve
is made to deadlock (a transient fault), a node refusing its work order (an exception rerouted),
and a promise quote.

Without promtool or prometheus these tests fail, saying how to install them: never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog
import yaml

import orchestrator.policies as packaged
from orchestrator.contract.envelope import Envelope
from orchestrator.contract.examples import example
from orchestrator.contract.execution import NodeRejectReason, WorkOrderRejected
from orchestrator.contract.orders import OrderAmended
from orchestrator.contract.status import ExceptionRaised
from orchestrator.domain.exception_handling import Attempt
from orchestrator.domain.learning import Override
from orchestrator.domain.playbooks import PlaybookAction
from orchestrator.domain.policy import parse_policy
from orchestrator.domain.shadow import PolicyAction
from orchestrator.domain.supply import preorder_plan, with_preorders
from orchestrator.promise.service import PromiseMetrics, RunningPromise, start_promise
from orchestrator.runtime.measures import StageMeasures
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.stage import HandlerContext
from orchestrator.settings import Settings
from orchestrator.stages import ORDER_STAGES
from orchestrator.stages.decide_node import count_decision, decision_outcome, stockout_lines
from orchestrator.stages.exceptions import _Case
from orchestrator.stages.learning_store import override
from orchestrator.stages.policy_store import change_policies
from orchestrator.stages.reserve import LEDGER_LOCK
from tests.harness import LEEDS, LONDON, MANCHESTER, Pipeline, address, ids, node, pipeline
from tests.harness import order as e2e_order
from tests.support import free_port, publish_events
from tests.test_sourcing import NOW, line, order, plan_for

__all__ = ["pipeline"]  # the module-scoped fixture, imported so pytest finds it

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "prometheus"
README = REPO / "README.md"

#: The pipeline's process serves /metrics on a port it tells, for this module's Prometheus to scrape.
PIPELINE_METRICS = True
PIPELINE_ENV = {
    # The packaged policy, learning on: only then does decide-node read and report the breakers.
    "ORCHESTRATOR_POLICY_FILE": str(Path(packaged.__file__).with_name("default.yaml")),
    "ORCHESTRATOR_POLICY_REFRESH_S": "0.2",
    "ORCHESTRATOR_EXCEPTIONS_GAUGE_S": "0.5",
}

#: Series Prometheus makes itself: used by the rules, documented by Prometheus.
PROMETHEUS_OWN = frozenset({"up"})
_INSTALL = (
    "install it with `.ci/install-prometheus` (what `make test` runs: Debian's prometheus package, "
    "which has both promtool and prometheus)"
)


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` is not on the PATH: {_INSTALL}. These tests do not skip.", pytrace=False)
    return found


def promtool(*args: str) -> str:
    done = subprocess.run(
        [tool("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# ------------------------------------------------------------------------------------- the README


@dataclass(frozen=True)
class Documented:
    """One metric of the README's Observability table."""

    name: str
    kind: str

    @property
    def series(self) -> str:
        """The name its samples have in Prometheus (a histogram's count stands for it)."""
        return f"{self.name}_count" if self.kind == "histogram" else self.name


def _expand(first: str, name: str) -> str:
    """A cell lists `orchestrator_shadow_decisions_total, …_shipments_total`: the ellipsis stands
    for the first name less its last word (and `_total` for a counter)."""
    if not name.startswith("…"):
        return name
    words = first.split("_")
    return "_".join(words[: -2 if first.endswith("_total") else -1]) + name[1:]


def documented_metrics(readme: str) -> list[Documented]:
    # The metrics table only: the section's subsections (the Prometheus alerts) have tables too.
    section = re.split(r"\n#{2,3} ", readme.split("\n## Observability\n", 1)[1], maxsplit=1)[0]
    found: list[Documented] = []
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        found += [Documented(_expand(names[0], n), cells[1]) for n in names]
    assert len(found) > 20, "the README's Observability table was not found or is nearly empty"
    return found


def _defined() -> dict[str, str]:
    """Every metric the code defines (the stages' registry and the promise service's): name -> type."""
    out: dict[str, str] = {}
    for registry in (RuntimeMetrics().registry, PromiseMetrics().registry):
        for family in registry.collect():
            # prometheus_client names a counter's family without the `_total` its samples carry.
            out[f"{family.name}_total" if family.type == "counter" else family.name] = family.type
    return out


def test_every_documented_metric_is_defined_with_its_type_and_every_defined_one_is_documented() -> None:
    documented = {d.name: d.kind for d in documented_metrics(README.read_text(encoding="utf-8"))}
    defined = _defined()
    assert documented == defined, (
        f"documented only: {sorted(set(documented) - set(defined))}; "
        f"defined only: {sorted(set(defined) - set(documented))}; "
        f"type differs: {sorted(n for n in set(documented) & set(defined) if documented[n] != defined[n])}"
    )


# ------------------------------------------------------------------------------------- what the stages count


def test_a_plans_stock_outs_are_the_lines_it_leaves_waiting_for_stock() -> None:
    stock = {("DC-MANCHESTER", "A"): 2, ("DC-LONDON", "C"): 1}
    partial = plan_for(order(line("1", "A", 2), line("2", "B")), stock)
    assert (decision_outcome(partial), stockout_lines(partial)) == ("partial", 1)
    # Held whole: every line waits, the one in stock too.
    held = plan_for(order(line("1", "A", 2), line("2", "B"), ship_complete=True), stock)
    assert (decision_outcome(held), stockout_lines(held)) == ("hold_for_stock", 2)
    split = plan_for(order(line("1", "A", 2), line("2", "C")), stock)
    assert (decision_outcome(split), stockout_lines(split), len(split.shipments)) == ("ship", 0, 2)
    # A pre-order waiting for its date is not short of anything.
    later = line("1", "A").model_copy(update={"release_date": NOW.date() + timedelta(days=30)})
    preorder = preorder_plan(order(later), sequence=1, plan_version=1, policy_version="p", now=NOW)
    assert (decision_outcome(preorder), stockout_lines(preorder)) == ("preorder_wait", 0)
    waits = with_preorders(plan_for(order(line("2", "B")), stock), order(later, line("2", "B")), NOW.date())
    assert (decision_outcome(waits), stockout_lines(waits)) == ("backorder", 1)


def test_a_decision_is_counted_once_its_batch_commits_and_never_before() -> None:
    metrics = RuntimeMetrics()
    measures = StageMeasures("test")
    measures.bind_metrics(metrics)
    plan = plan_for(order(line("1", "A", 2), line("2", "B")), {("DC-MANCHESTER", "A"): 2})
    ctx = HandlerContext(
        stage="decide-node",
        topic="t",
        event=Envelope.new(plan, source="test"),
        db=None,
        now=NOW,
        log=structlog.get_logger("test"),
    )
    count_decision(measures, ctx, plan, "order")

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("orchestrator_decisions_total", outcome="partial", origin="order") is None
    for committed in ctx.on_commit:  # what the worker does after the commit, and only then
        committed()
    assert value("orchestrator_decisions_total", outcome="partial", origin="order") == 1
    assert value("orchestrator_stockout_lines_total", outcome="partial", origin="order") == 1
    # Unbound (a stage built outside a process): nothing is counted, nothing fails.
    unbound = StageMeasures("test")
    count_decision(unbound, ctx, plan, "order")
    assert len(ctx.on_commit) == 1


def test_an_exception_case_ends_in_the_action_that_resolved_it_or_says_why_none_did() -> None:
    raised = example("exception.raised.v1")
    assert isinstance(raised, ExceptionRaised)
    case = _Case(
        raised,
        [Attempt(PlaybookAction.REROUTE, False, "no node"), Attempt(PlaybookAction.BACKORDER, True, "")],
    )
    case.resolve("back-ordered")
    assert case.ending() == "backorder"
    review = _Case(raised, [Attempt(PlaybookAction.HOLD_FOR_REVIEW, True, "queued")], state="in_review")
    assert review.ending() == "manual_review"
    cancelled = _Case(raised)
    cancelled.resolve("the order was cancelled; nothing to repair")
    assert cancelled.ending() == "order_cancelled"


# ------------------------------------------------------------------------------------- promtool


def _rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "rules.yml").read_text(encoding="utf-8"))
    return loaded


def test_promtool_accepts_the_scrape_config_which_scrapes_every_stage_and_the_promise_service() -> None:
    promtool("check", "config", "prometheus.yml")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    # The compose file names its services after the stages; the dashboards select by job.
    assert jobs == {**{stage: [f"{stage}:8080"] for stage in ORDER_STAGES}, "promise": ["promise:8082"]}


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("check", "rules", "rules.yml")
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_every_alert_has_a_severity_a_wait_and_runbook_annotations() -> None:
    alerts = [r for g in _rules()["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        assert {"summary", "description", "runbook"} <= set(alert["annotations"]), alert["alert"]
        # One that fires on a single event needs no wait; the others must hold before they page.
        assert "for" in alert or alert["labels"]["severity"] == "info", alert["alert"]
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "rules_test.yml").read_text(encoding="utf-8")))
    assert {a["alert"] for a in alerts} <= tested, "every alert has a promtool unit test"


def metrics_in_rules(rules: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(metric names, recorded series names) the expressions and annotations of `rules` use."""
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    texts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    texts += [v for g in rules["groups"] for r in g["rules"] for v in r.get("annotations", {}).values()]
    used: set[str] = set()
    recorded_used: set[str] = set()
    for text in texts:
        # Label values and template strings are not metric names.
        bare = re.sub(r'"[^"]*"', "", re.sub(r"\{\{.*?\}\}", "", text))
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
            if ":" in token and token.startswith("orchestrator:"):
                recorded_used.add(token)
            elif token.startswith("orchestrator_") or token in PROMETHEUS_OWN:
                used.add(token)
    assert recorded_used <= recorded, f"not recorded by any rule: {sorted(recorded_used - recorded)}"
    return used, recorded


def test_every_metric_the_rules_use_is_documented() -> None:
    documented = {d.name: d.kind for d in documented_metrics(README.read_text(encoding="utf-8"))}
    used, _ = metrics_in_rules(_rules())
    histograms = {n for n, kind in documented.items() if kind == "histogram"}
    unknown = set()
    for name in used - PROMETHEUS_OWN:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if name not in documented and not (base in histograms and base != name):
            unknown.add(name)
    assert not unknown, (
        f"used in deploy/prometheus/rules.yml but not in the README's table: {sorted(unknown)}"
    )


# ------------------------------------------------------------------------------------- a live run


@contextlib.asynccontextmanager
async def running_prometheus(targets: dict[str, str], workdir: Path) -> AsyncIterator[str]:
    """A real Prometheus scraping `targets` (job -> host:port) every second, with the rules of
    deploy/prometheus evaluated every second too, its storage in `workdir`; stopped on exit."""
    shutil.copy(DEPLOY / "rules.yml", workdir / "rules.yml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 60
                while True:
                    assert proc.returncode is None, (
                        f"prometheus exited: {(workdir / 'prometheus.log').read_text(errors='replace')}"
                    )
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{url}/-/ready") as resp:
                            if resp.status == 200:
                                break
                    assert time.monotonic() < deadline, "prometheus never became ready"
                    await asyncio.sleep(0.2)

                # Ready is not scraping yet: targets come a few seconds later. A counter whose first
                # sample is already past what happened shows no increase, so the caller waits.
                async def scraped() -> bool:
                    up = {r["metric"]["job"] for r in await query(http, url, "up == 1")}
                    return up == set(targets)

                await until(scraped, f"prometheus to scrape {targets}")
            yield url
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), timeout=30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def query(http: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def total(http: aiohttp.ClientSession, url: str, promql: str) -> float:
    """The value of `sum(promql)`, 0 when there is no series."""
    result = await query(http, url, f"sum({promql})")
    return float(result[0]["value"][1]) if result else 0.0


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def promise_address(pipeline: Pipeline) -> AsyncIterator[str]:
    """The promise service on a port of its own (it serves its own /metrics), caught up."""
    settings = Settings(
        kafka_bootstrap=pipeline.bootstrap, database_url=pipeline.database_url, instance_id="prom-test"
    )
    running: RunningPromise = await start_promise(settings, pipeline.deps.policy, port=free_port())
    host, port = running.addresses[0]
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while (await http.get(f"http://{host}:{port}/healthz")).status != 200:
                assert time.monotonic() < deadline, "the promise views never caught up"
                await asyncio.sleep(0.1)
        yield f"{host}:{port}"
    finally:
        await running.close()


@pytest.fixture
async def cleaned(pipeline: Pipeline) -> AsyncIterator[list[str]]:
    """Test modules share one database: the shadow deployed here and the breakers overridden here
    (subjects appended to the list) are taken out afterwards."""
    start = await pipeline.db.fetchval("SELECT coalesce(max(id), 0) FROM decide_policy_changes")
    subjects: list[str] = []
    try:
        yield subjects
    finally:
        await pipeline.db.execute("DELETE FROM decide_policy_changes WHERE id > $1", start)
        await pipeline.db.execute("DELETE FROM learning_breakers WHERE subject = ANY($1::text[])", subjects)


async def deploy_shadow(p: Pipeline, far: str) -> None:
    """A shadow policy that sends everything to `far`: every decision is planned twice, differently."""
    policy = yaml.safe_load(Path(packaged.__file__).with_name("default.yaml").read_text(encoding="utf-8"))
    policy.update(version=f"far-first-{uuid.uuid4().hex[:6]}", ranked_nodes=[far], rank_bonus=1000.0)
    text = yaml.safe_dump(policy)
    async with p.db.acquire() as conn:
        await change_policies(
            conn,
            PolicyAction.DEPLOY_SHADOW,
            who="test_prometheus",
            policy=parse_policy(text, "shadow"),
            policy_yaml=text,
        )


async def deadlocked_race(
    p: Pipeline, near: str, sku: str, tag: Callable[[str], str]
) -> tuple[str, str] | None:
    """Two orders for the one unit of `sku` at `near`, both planned before reserve can hold either,
    and reserve made to deadlock on the way (a transient fault: it rolls back and retries).

    This test's transaction holds the ledger row; reserve, holding its ledger lock, waits for the
    row; then this transaction asks for the ledger lock. PostgreSQL aborts whichever waiter checks
    for a deadlock first, and reserve waited first (this transaction checks 10 s after it waits,
    where it may). Returns the two orders, or None when this transaction was the one aborted.
    """
    await p.setup_network(stock={(near, sku): 1})
    racers = [e2e_order(tag(f"RACE-{i}"), [(sku, 1)], to=LONDON) for i in (1, 2)]
    conn = await asyncpg.connect(p.database_url)
    try:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SET deadlock_timeout = '10s'")
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "SELECT 1 FROM reserve_ledger WHERE node_id = $1 AND sku = $2 FOR UPDATE", near, sku
            )
            await p.publish(*racers)

            async def both_planned() -> bool:
                planned = await p.db.fetchval(
                    "SELECT count(DISTINCT order_id) FROM decide_plans WHERE order_id = ANY($1::text[])",
                    [o.order_id for o in racers],
                )
                return bool(planned == 2)

            async def reserve_waits() -> bool:
                waiting = await p.db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'UPDATE reserve_ledger%' AND pid <> $1",
                    conn.get_server_pid(),
                )
                return bool(waiting)

            await until(both_planned, "decide-node to plan both racers on the same unit")
            await until(reserve_waits, "reserve to wait for the ledger row")
            try:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", LEDGER_LOCK)
            except asyncpg.DeadlockDetectedError:
                return None
        finally:
            # Reserve goes on once both locks are gone: the first plan holds the unit, the other loses.
            await tx.rollback()
    finally:
        await conn.close()
    return racers[0].order_id, racers[1].order_id


async def scenario(p: Pipeline, promise: str, cleaned: list[str]) -> None:
    """Orders through every stage so that every documented metric has something to say."""
    n = ids("PROM")
    near, far = n("DC-LONDON"), n("DC-MANCHESTER")
    kettle, cup, lamp, rare = n("KETTLE"), n("CUP"), n("LAMP"), n("RARE")
    await p.setup_network(
        node(near, LONDON),
        node(far, MANCHESTER),
        stock={(near, kettle): 5, (far, kettle): 5, (near, cup): 5, (far, lamp): 5, (near, rare): 0},
    )
    await deploy_shadow(p, far)
    subject = f"node:{far}"
    cleaned.append(subject)
    async with p.db.acquire() as conn:
        await override(conn, subject, Override.CLOSED, "test_prometheus: keep it in routing")
    await asyncio.sleep(0.5)  # decide-node reads the deployment every 0.2 s

    shipped = e2e_order(n("SHIP"), [(kettle, 1)], to=LONDON)
    split = e2e_order(n("SPLIT"), [(cup, 1), (lamp, 1)], to=LONDON)  # no node has both
    waiting = e2e_order(n("BACK"), [(rare, 1)], to=LONDON)
    created = Envelope.new(shipped, source="test/oms")
    # The OMS sends one order twice (one effect), and an amendment for an order nobody knows (a failed
    # event, dead-lettered; a cancellation would be kept for the order it names).
    await publish_events(p.bootstrap, "oms.orders.v1", [created, created])
    stray = OrderAmended(order_id=n("GHOST"), priority=True)
    await p.publish(split, waiting, stray)
    await p.out.final_state(shipped.order_id, "released")
    await p.out.final_state(split.order_id, "released")
    await p.out.final_state(waiting.order_id, "back_ordered")
    assert len(p.out.released(split.order_id)) == 2, "the split order ships from both nodes"

    for attempt in range(3):
        racers = await deadlocked_race(p, near, n(f"LAST-UNIT-{attempt}"), n)
        for order_id in racers or ():
            await p.out.final_state(order_id, "released", "back_ordered")
        if racers is not None:
            break
    else:
        raise AssertionError("PostgreSQL never chose reserve as the deadlock's victim in 3 attempts")

    # The node refuses the first order's work: monitor raises node_rejected, the playbook reroutes.
    [wo] = p.out.released(shipped.order_id)
    await p.publish(
        WorkOrderRejected(
            work_order_id=wo["work_order_id"],
            order_id=shipped.order_id,
            node_id=wo["node_id"],
            occurred_at=datetime.now(UTC),
            reason=NodeRejectReason.NO_STOCK,
        )
    )

    async def rerouted() -> bool:
        state = await p.db.fetchval(
            "SELECT state FROM exceptions_cases WHERE order_id = $1", shipped.order_id
        )
        return bool(state == "resolved")

    await until(rerouted, "the rejected work order's exception to be resolved")

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{promise}/v1/promise",
            json={
                "cart": [{"sku": kettle, "quantity": 1}],
                "ship_to": address(LEEDS, "Leeds").model_dump(mode="json"),
                "delivery_options": [{"kind": "standard"}],
            },
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.integration
async def test_a_real_prometheus_scraping_a_run_has_data_for_every_documented_metric(
    pipeline: Pipeline, promise_address: str, cleaned: list[str], tmp_path: Path
) -> None:
    documented = documented_metrics(README.read_text(encoding="utf-8"))
    targets = {"orchestrator": f"127.0.0.1:{pipeline.metrics_port}", "promise": promise_address}
    async with running_prometheus(targets, tmp_path) as url, aiohttp.ClientSession() as http:
        await scenario(pipeline, promise_address, cleaned)

        # Every documented metric has a series with a sample, through the HTTP API.
        async def all_there() -> bool:
            async with http.get(f"{url}/api/v1/label/__name__/values") as resp:
                names = set((await resp.json())["data"])
            return all(d.series in names for d in documented)

        try:
            await until(all_there, "every documented metric in Prometheus", timeout=30)
        finally:
            async with http.get(f"{url}/api/v1/label/__name__/values") as resp:
                names = set((await resp.json())["data"])
            missing = sorted(d.series for d in documented if d.series not in names)
            assert not missing, f"documented but never scraped: {missing}"
        for d in documented:
            assert await query(http, url, d.series), f"{d.series} has no data now"

        # Both targets are up, and every series says which one it came from.
        up = {r["metric"]["job"]: r["value"][1] for r in await query(http, url, "up")}
        assert up == {"orchestrator": "1", "promise": "1"}
        assert not await query(http, url, '{__name__=~"orchestrator_.+", job=""}')

        # What the scenario did, counted once each batch committed.
        async def at_least(promql: str, want: float) -> None:
            async def enough() -> bool:
                return await total(http, url, promql) >= want

            await until(enough, f"{promql} >= {want} (now {await total(http, url, promql)})", timeout=15)

        await at_least('orchestrator_decisions_total{outcome="ship",origin="order"}', 2)
        await at_least('orchestrator_decisions_total{outcome="backorder",origin="order"}', 1)
        await at_least('orchestrator_decisions_total{outcome="backorder",origin="redecide"}', 1)
        await at_least('orchestrator_decisions_total{origin="repair"}', 1)
        await at_least("orchestrator_split_decisions_total", 1)
        await at_least('orchestrator_stockout_lines_total{outcome="backorder"}', 2)
        await at_least('orchestrator_reservations_total{result="confirmed",plan="whole"}', 3)
        await at_least('orchestrator_reservations_total{result="lost_race",plan="whole"}', 1)
        await at_least('orchestrator_reservations_total{result="confirmed",plan="repair"}', 1)
        await at_least("orchestrator_order_release_latency_seconds_count", 3)
        await at_least('orchestrator_exceptions_opened_total{kind="node_rejected"}', 1)
        await at_least('orchestrator_exceptions_resolved_total{kind="node_rejected",resolution="reroute"}', 1)
        await at_least('orchestrator_transient_faults_total{stage="reserve",kind="DeadlockDetectedError"}', 1)
        await at_least('orchestrator_dead_letters_total{stage="ingest",reason="unknown_order"}', 1)
        await at_least('orchestrator_events_duplicate_total{stage="ingest"}', 1)
        await at_least("orchestrator_shadow_differing_decisions_total", 1)
        await at_least('orchestrator_routing_breaker{subject="' + cleaned[0] + '",state="closed"}', 1)
        await at_least('orchestrator_promise_options_total{job="promise"}', 1)
        states = {r["metric"]["state"] for r in await query(http, url, "orchestrator_exceptions_unresolved")}
        assert states == {"open", "in_review"}

        # The rules of deploy/prometheus load and evaluate on the real series.
        async with http.get(f"{url}/api/v1/rules") as resp:
            groups = (await resp.json())["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == sum(len(g["rules"]) for g in _rules()["groups"])
        assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
        await at_least('orchestrator:decisions:rate5m{outcome="ship"}', 1e-9)
        for recorded in (
            "orchestrator:consumer_lag_messages:sum",
            "orchestrator:order_release_latency_seconds:p99_5m",
        ):
            assert await query(http, url, recorded), f"{recorded} has no data"
