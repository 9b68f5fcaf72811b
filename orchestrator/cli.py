"""`orchestrator`: the command line of the order orchestrator.

Every command reads KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL; where they are
unset it uses the local servers that `orchestrator infra up` started (their
addresses are kept in the state folder).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.runtime.logging import redact_text
from orchestrator.settings import Settings


def resolve_settings(state_dir: Path | None = None) -> Settings:
    """Settings from the environment, falling back to the local servers' recorded addresses."""
    settings = Settings.from_env()
    state = state_dir or settings.state_dir
    endpoints_file = state / "endpoints.json"
    if endpoints_file.exists():
        recorded = json.loads(endpoints_file.read_text())
        changes: dict[str, Any] = {}
        if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and recorded.get("kafka_bootstrap"):
            changes["kafka_bootstrap"] = recorded["kafka_bootstrap"]
            if not os.environ.get("KAFKA_SECURITY_PROTOCOL"):
                from orchestrator.infra.manager import recorded_kafka_security

                # The local broker of `infra up --secure` takes the credentials it was recorded with.
                changes["kafka_security"] = recorded_kafka_security(state) or settings.kafka_security
        if not os.environ.get("DATABASE_URL") and recorded.get("database_url"):
            changes["database_url"] = recorded["database_url"]
        settings = dataclasses.replace(settings, **changes)
    return dataclasses.replace(settings, state_dir=state)


# --------------------------------------------------------------------------- infra


def cmd_infra(args: argparse.Namespace) -> int:
    from orchestrator.infra import InfraError, infra_down, infra_status, infra_up

    state = Path(args.state_dir) if args.state_dir else Settings.from_env().state_dir
    try:
        if args.action == "up":
            endpoints = infra_up(
                state,
                kafka_port=args.kafka_port,
                postgres_port=args.postgres_port,
                secure=True if args.secure else None,
            )
            # Quoted for the shell (a secure DSN has `&`); secure mode names the CA and the password
            # files, so nothing printed here is a secret.
            lines = {"KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap}
            if endpoints.kafka_security.protocol != "PLAINTEXT":
                lines.update(endpoints.kafka_security.env())
            lines["DATABASE_URL"] = endpoints.database_url
            for name, value in lines.items():
                print(f"{name}={shlex.quote(redact_text(value))}")
        elif args.action == "down":
            infra_down(state)
            print("local Kafka and PostgreSQL stopped")
        else:
            print(json.dumps(infra_status(state), indent=2, default=str))
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# --------------------------------------------------------------------------- topics


def cmd_topics(args: argparse.Namespace) -> int:
    from orchestrator.kafka_acls import AclApplyError
    from orchestrator.topics import CatalogError, TopicApplyError, apply_topics, format_catalog, load_catalog

    try:
        catalog = load_catalog(Path(args.file) if args.file else None)
        if args.action == "list":
            print(format_catalog(catalog))
            return 0
        if args.action == "acls":
            return _topics_acls(args, catalog)
        settings = resolve_settings()
        report = asyncio.run(apply_topics(settings.kafka, catalog, grow_partitions=args.grow_partitions))
    except (CatalogError, TopicApplyError, AclApplyError) as exc:
        # Both messages already name the file or topic and what is wrong: a traceback would bury them.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    return 0


def _topics_acls(args: argparse.Namespace, catalog: Any) -> int:
    """`topics acls`: the kafka-acls.sh script of every stage's principal (and the outside systems')."""
    from orchestrator.kafka_acls import acl_script, acl_table, apply_acls, catalog_acls

    acls = catalog_acls(catalog)
    if args.apply:
        settings = resolve_settings()
        applied = asyncio.run(apply_acls(settings.kafka, acls))
        print(f"{applied} ACLs applied on {settings.kafka_bootstrap}")
        return 0
    text = acl_table(acls) if args.table else acl_script(acls)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {len(acls)} ACLs to {args.out}")
    else:
        print(text, end="")
    return 0


# --------------------------------------------------------------------------- schemas


def cmd_schemas(args: argparse.Namespace) -> int:
    from orchestrator.contract.schemas import export_schemas

    out = Path(args.out)
    written = export_schemas(out)
    print(f"wrote {len(written)} schemas to {out}/")
    return 0


# --------------------------------------------------------------------------- asyncapi


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from orchestrator.asyncapi import (
        AsyncApiError,
        asyncapi_document,
        default_document_path,
        is_stale,
        render_document,
    )
    from orchestrator.contract.schemas import default_schema_dir
    from orchestrator.topics import CatalogError, load_catalog

    try:
        catalog = load_catalog(Path(args.file) if args.file else None)
        schemas = Path(args.schemas) if args.schemas else default_schema_dir()
        text = render_document(asyncapi_document(catalog, schemas))
    except (CatalogError, AsyncApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out == "-":
        if args.check:
            print("error: --check compares a file; it cannot be combined with --out -", file=sys.stderr)
            return 2
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else default_document_path()
    if args.check:
        if is_stale(out, text):
            print(f"{out} is out of date with topics.yaml and schemas/: run `orchestrator asyncapi`")
            return 1
        print(f"{out} is up to date")
        return 0
    if is_stale(out, text):
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        print(f"{out} is already up to date")
    return 0


# --------------------------------------------------------------------------- db


def cmd_db(args: argparse.Namespace) -> int:
    import asyncpg

    from orchestrator.db.migrate import migrate

    settings = resolve_settings()
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The URL may carry a password: name the server without it.
        where = _database_address(settings.database_url)
        print(f"error: cannot migrate the database at {where}: {exc}", file=sys.stderr)
        return 2
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


# --------------------------------------------------------------------------- explain


async def load_plans(database_url: str, order_id: str) -> list[str]:
    """Every plan decide-node recorded for the order, oldest first, as JSON."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT plan_json FROM decide_plans WHERE order_id = $1 ORDER BY plan_version", order_id
        )
    finally:
        await conn.close()
    return [r["plan_json"] for r in rows]


def cmd_explain(args: argparse.Namespace) -> int:
    from orchestrator.contract.pipeline import PlanDecided
    from orchestrator.domain.explain import explain_plan

    settings = resolve_settings()
    plans = [
        PlanDecided.model_validate_json(raw)
        for raw in asyncio.run(load_plans(settings.database_url, args.order_id))
    ]
    if not plans:
        print(
            f"no plan recorded for order {args.order_id} "
            "(not yet decided, rejected, or held before planning)",
            file=sys.stderr,
        )
        return 1
    shown = plans if args.all else plans[-1:]
    for plan in shown:
        if len(shown) > 1:
            print(f"=== plan {plan.plan_version} of {len(plans)} ===")
        print(explain_plan(plan))
    if not args.all and len(plans) > 1:
        print(f"({len(plans) - 1} earlier plan(s): --all shows them)")
    return 0


# --------------------------------------------------------------------------- timeline, api


def _database_address(database_url: str) -> str:
    """Where the database is, for people: host, port and database, never a password the URL carries."""
    url = urlsplit(database_url)
    query = parse_qs(url.query)
    host = url.hostname or (query.get("host") or ["localhost"])[0]
    port = url.port or (query.get("port") or ["5432"])[0]
    return f"{host}:{port}{url.path}"


def cmd_timeline(args: argparse.Namespace) -> int:
    import asyncpg

    from orchestrator.api.queries import order_state, order_timeline, parked_events, timeline_text

    async def load(
        database_url: str,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
        conn = await asyncpg.connect(database_url)
        try:
            return (
                await order_state(conn, args.order_id),
                await order_timeline(conn, args.order_id),
                await parked_events(conn, args.order_id),
            )
        finally:
            await conn.close()

    settings = resolve_settings()
    try:
        state, events, parked = asyncio.run(load(settings.database_url))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(
            f"error: cannot read the database at {_database_address(settings.database_url)}: {exc}",
            file=sys.stderr,
        )
        return 2
    if state is None and not events and not parked:
        print(f"unknown order {args.order_id}: status-sync has recorded nothing about it", file=sys.stderr)
        return 1
    print(timeline_text(args.order_id, state, events, parked))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import asyncpg

    from orchestrator.api.app import serve_api
    from orchestrator.runtime.logging import configure_logging

    settings = resolve_settings()
    configure_logging(settings.log_level)

    def ready(addresses: list[tuple[str, int]]) -> None:
        where = ", ".join(f"http://{host}:{port}" for host, port in addresses)
        print(f"order API on {where} (read-only, no authentication); Ctrl-C stops it", flush=True)

    try:
        asyncio.run(serve_api(settings.database_url, args.host, args.port, ready=ready))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Port taken or database unreachable: one line, not a traceback.
        print(
            f"error: cannot serve the API (database {_database_address(settings.database_url)}): {exc}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- review


def cmd_routing(args: argparse.Namespace) -> int:
    from orchestrator.routing_cli import cmd_routing as run

    return run(args, resolve_settings())


def cmd_review(args: argparse.Namespace) -> int:
    """The open manual-review queue of the exceptions stage, oldest first."""
    from datetime import UTC, datetime

    import asyncpg

    from orchestrator.stages.exceptions import review_queue

    async def load(database_url: str) -> list[dict[str, object]]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await review_queue(conn))
        finally:
            await conn.close()

    settings = resolve_settings()
    try:
        rows = asyncio.run(load(settings.database_url))
    except asyncpg.UndefinedTableError:
        print("error: the review queue does not exist yet; run `orchestrator db migrate`", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The URL may carry a password: name the server without it.
        where = _database_address(settings.database_url)
        print(f"error: cannot read the review queue at {where}: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("the review queue is empty")
        return 0
    table = [("ORDER", "KIND", "SINCE", "REASON")]
    for r in rows:
        since = r["queued_at"]
        when = since.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if isinstance(since, datetime) else since
        table.append((str(r["order_id"]), str(r["kind"]), str(when), str(r["reason"])))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    print(f"({len(rows)} open)")
    return 0


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.runtime.logging import configure_logging
    from orchestrator.runtime.process import StartupError, run_stages
    from orchestrator.stages import build_stages

    settings = resolve_settings()
    if args.http_port is not None:
        settings = dataclasses.replace(settings, http_port=args.http_port)
    configure_logging(settings.log_level)
    try:
        stages = build_stages(args.stage, relay_input=args.input, relay_output=args.output)
        asyncio.run(run_stages(stages, settings))
    except (StartupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- start


def cmd_start(args: argparse.Namespace) -> int:
    """Everything `make run` does: servers, topics, migrations, then all stages driven by the
    simulated outside world, watched live, until Ctrl-C or until `--orders N` are done."""
    from orchestrator.db.migrate import migrate
    from orchestrator.infra import InfraError, infra_down, infra_up
    from orchestrator.runtime.logging import configure_logging
    from orchestrator.runtime.process import StartupError, run_stages
    from orchestrator.sim.live.commands import live_options
    from orchestrator.sim.live.driver import ChildFailed, run_live
    from orchestrator.sim.live.view import summary_text
    from orchestrator.stages import build_stages
    from orchestrator.topics import apply_topics, load_catalog

    settings = Settings.from_env()
    if args.http_port is not None:
        settings = dataclasses.replace(settings, http_port=args.http_port)
    try:
        endpoints = infra_up(settings.state_dir, secure=True if args.secure else None)
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = dataclasses.replace(
        settings,
        kafka_bootstrap=endpoints.kafka_bootstrap,
        kafka_security=endpoints.kafka_security,
        database_url=endpoints.database_url,
    )
    print(f"Kafka      {settings.kafka_bootstrap} ({settings.kafka_security.protocol})")
    print(f"PostgreSQL {redact_text(settings.database_url)}")
    metrics = f"http://{settings.http_host}:{settings.http_port}/metrics"
    try:
        print(asyncio.run(apply_topics(settings.kafka, load_catalog())).render())
        applied = asyncio.run(migrate(settings.database_url))
        print("migrations: " + (", ".join(applied) if applied else "up to date"))
        if args.no_traffic:
            configure_logging(settings.log_level)
            stages = build_stages("all")
            print(
                f"stages: {', '.join(s.name for s in stages)}; metrics on {metrics}; Ctrl-C stops everything"
            )
            asyncio.run(run_stages(stages, settings))
            return 0
        print("stages and simulators starting; Ctrl-C stops everything")
        report = asyncio.run(run_live(settings, live_options(args)))
        print(summary_text(report))
        example = next(iter(report["unsettled_orders"]), None) or f"{report['order_prefix']}000001"
        print(
            f"\nLogs of every process: {report['logs']}"
            f"\nMetrics: the stages served Prometheus metrics on {report['metrics_at']} while they ran"
            f" (event counts, handling times, lag per partition, dead letters)"
            f"\nWhy an order ships from where it does:  orchestrator explain {example}"
            f"\nIts whole story:                        orchestrator timeline {example}"
            f"\nOpen manual reviews:                    orchestrator review"
        )
        if endpoints.managed and not args.keep_servers:
            print("(start with --keep-servers to keep Kafka and PostgreSQL up for these)")
    except (StartupError, ValueError, ChildFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if endpoints.managed and not args.keep_servers:
            infra_down(settings.state_dir)
            print("local Kafka and PostgreSQL stopped")
    return 0


# --------------------------------------------------------------------------- simulate


def cmd_simulate(args: argparse.Namespace) -> int:
    import orchestrator.policies as policies_package
    from orchestrator.domain.policy import PolicyError, load_policy
    from orchestrator.sim import build_network, order_stream
    from orchestrator.sim.orders import DEFAULT_SHIP_COMPLETE_RATE
    from orchestrator.sim.simulate import run_simulation

    if args.orders < 1 or args.hours <= 0:
        print("error: --orders must be at least 1 and --hours positive", file=sys.stderr)
        return 2
    ship_complete_rate = (
        DEFAULT_SHIP_COMPLETE_RATE if args.ship_complete_rate is None else args.ship_complete_rate
    )
    if not 0 <= ship_complete_rate <= 1:
        print("error: --ship-complete-rate is a share of the orders, between 0 and 1", file=sys.stderr)
        return 2
    try:
        # No --policy: the packaged default, not ORCHESTRATOR_POLICY_FILE, so runs compare alike.
        packaged = Path(policies_package.__file__).with_name("default.yaml")
        policies = [load_policy(Path(p)) for p in args.policy] or [load_policy(packaged)]
        lookahead = None
        if args.lookahead is not None:  # `--lookahead` alone: the packaged look-ahead policy
            lookahead = load_policy(Path(args.lookahead or packaged.with_name("lookahead.yaml")))
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if lookahead is not None:
        if policies[0].lookahead.enabled or not lookahead.lookahead.enabled:
            print(
                "error: --lookahead compares a policy with look-ahead on with the first policy, which "
                "must have it off",
                file=sys.stderr,
            )
            return 2
        if args.stock_cover <= 0 or args.optimum_seconds <= 0:
            print("error: --stock-cover and --optimum-seconds must be positive", file=sys.stderr)
            return 2
    network = build_network(seed=args.seed)
    orders = order_stream(
        network, seed=args.seed, count=args.orders, hours=args.hours, ship_complete_rate=ship_complete_rate
    )
    print(f"{len(network.nodes)} nodes, {len(orders)} orders, seed {args.seed}", file=sys.stderr)
    run_simulation(network, orders, policies, seed=args.seed, out=Path(args.out))
    if args.failing_node:
        import orjson

        from orchestrator.sim.learning_sim import busiest_dc, compare_learning, format_learning_table

        failing = (
            busiest_dc(network, orders, policies[0]) if args.failing_node == "auto" else args.failing_node
        )
        if failing not in {n.node_id for n in network.nodes}:
            print(
                f"error: --failing-node {failing!r} is not a node of the simulated network", file=sys.stderr
            )
            return 2
        runs = compare_learning(
            network, orders, policies[0], failing_node=failing, failure_rate=args.failure_rate, seed=args.seed
        )
        print("\n" + format_learning_table(runs, failing, args.failure_rate))
        path = Path(args.out) / "learning.json"
        report = {
            "failing_node": failing,
            "failure_rate": args.failure_rate,
            "runs": [r.to_json() for r in runs],
        }
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"wrote {path}")
    if lookahead is not None:
        from orchestrator.sim.lookahead_sim import run_lookahead

        run_lookahead(
            network,
            orders,
            policies[0],
            lookahead,
            seed=args.seed,
            out=Path(args.out),
            cover=args.stock_cover,
            time_limit_s=args.optimum_seconds,
        )
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.sim.live.commands import add_live_flags, add_sim_parser

    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    infra = sub.add_parser("infra", help="start, stop or inspect the local Kafka and PostgreSQL")
    infra.add_argument("action", choices=["up", "down", "status"])
    infra.add_argument("--state-dir", help="where the servers keep their data (default: ./.state)")
    infra.add_argument("--kafka-port", type=int, default=9092)
    infra.add_argument("--postgres-port", type=int, default=5432)
    infra.add_argument(
        "--secure",
        action="store_true",
        help="up: Kafka over SASL_SSL (SCRAM-SHA-512) with per-stage principals and ACLs, PostgreSQL "
        "over TLS with a password (also ORCHESTRATOR_LOCAL_SECURE=1)",
    )
    infra.set_defaults(func=cmd_infra)

    topics = sub.add_parser("topics", help="the topic catalog (topics.yaml)")
    topics.add_argument("action", choices=["apply", "list", "acls"])
    topics.add_argument("--file", help="catalog file (default: topics.yaml)")
    topics.add_argument(
        "--grow-partitions", action="store_true", help="add partitions where the catalog asks for more"
    )
    topics.add_argument("--out", help="acls: write the kafka-acls.sh script (or --table) to this file")
    topics.add_argument("--table", action="store_true", help="acls: one line per rule instead of a script")
    topics.add_argument(
        "--apply", action="store_true", help="acls: create them on the broker (as a principal allowed to)"
    )
    topics.set_defaults(func=cmd_topics)

    schemas = sub.add_parser("schemas", help="JSON Schemas of every event type")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("--out", default="schemas")
    schemas.set_defaults(func=cmd_schemas)

    asyncapi = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of every topic (asyncapi.yaml)")
    asyncapi.add_argument("--out", help="file to write (default: asyncapi.yaml at the root; - for stdout)")
    asyncapi.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when the file differs from a fresh render"
    )
    asyncapi.add_argument("--file", help="catalog file (default: topics.yaml)")
    asyncapi.add_argument("--schemas", help="folder of the event JSON Schemas (default: schemas/)")
    asyncapi.set_defaults(func=cmd_asyncapi)

    db = sub.add_parser("db", help="the database")
    db.add_argument("action", choices=["migrate"])
    db.set_defaults(func=cmd_db)

    explain = sub.add_parser("explain", help="why an order ships from where it does, in words")
    explain.add_argument("order_id")
    explain.add_argument("--all", action="store_true", help="every plan of the order, not only the latest")
    explain.set_defaults(func=cmd_explain)

    timeline = sub.add_parser("timeline", help="an order's whole story, event by event, and its state now")
    timeline.add_argument("order_id")
    timeline.set_defaults(func=cmd_timeline)

    api = sub.add_parser("api", help="the read-only order HTTP API, until Ctrl-C (no authentication)")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)")
    api.add_argument("--port", type=int, default=8081)
    api.set_defaults(func=cmd_api)

    review = sub.add_parser("review", help="the open manual-review queue of exceptions")
    review.set_defaults(func=cmd_review)

    from orchestrator.routing_cli import add_routing_parser

    add_routing_parser(sub, cmd_routing)

    from orchestrator.policy_cli import add_policy_parsers

    add_policy_parsers(sub, resolve_settings)

    start = sub.add_parser(
        "start", help="servers, topics, migrations and every stage, until Ctrl-C (make run)"
    )
    start.add_argument(
        "--keep-servers", action="store_true", help="leave Kafka and PostgreSQL running at exit"
    )
    start.add_argument(
        "--http-port",
        type=int,
        help="port of the stages' /metrics, /healthz, /readyz: the first of nine, a process per stage "
        "and a port each from it up (with --no-traffic, the one process's)",
    )
    start.add_argument(
        "--secure", action="store_true", help="start the local servers secure (as `infra up --secure`)"
    )
    add_live_flags(start)
    start.set_defaults(func=cmd_start)
    add_sim_parser(sub)

    from orchestrator.faults.commands import add_faults_parser

    add_faults_parser(sub)

    run = sub.add_parser("run", help="run one stage, or all of them in one process")
    run.add_argument("stage", help="a stage name, or 'all'")
    run.add_argument("--input", help="relay only: the topic to read")
    run.add_argument("--output", help="relay only: the topic to write")
    run.add_argument("--http-port", type=int, help="port of /metrics, /healthz, /readyz")
    run.set_defaults(func=cmd_run)

    from orchestrator.promise.cli import add_promise_parser

    add_promise_parser(sub)

    simulate = sub.add_parser("simulate", help="compare routing policies offline on a simulated network")
    simulate.add_argument(
        "--policy", action="append", default=[], help="policy YAML (repeatable; default: the packaged one)"
    )
    simulate.add_argument("--orders", type=int, default=500, help="orders in the stream (default 500)")
    simulate.add_argument(
        "--hours", type=float, default=36.0, help="hours the stream's orders are placed over (default 36)"
    )
    simulate.add_argument("--seed", type=int, default=1, help="seed of the network and the orders")
    simulate.add_argument(
        "--ship-complete-rate",
        type=float,
        metavar="SHARE",
        help="share of the stream's orders that ship complete or not at all (default 0.06, "
        "`orchestrator.sim.orders.DEFAULT_SHIP_COMPLETE_RATE`); a seed draws the same orders whatever "
        "the share, only their ship-complete flags differ",
    )
    simulate.add_argument("--out", default="bench-results", help="where simulate.json and simulate.png go")
    simulate.add_argument(
        "--failing-node",
        help="also compare the learning policy with the static one while this node (or `auto`: the "
        "busiest) short-picks --failure-rate of its work orders",
    )
    simulate.add_argument(
        "--failure-rate",
        type=float,
        default=0.4,
        help="share of the failing node's work orders that come up short",
    )
    simulate.add_argument(
        "--lookahead",
        nargs="?",
        const="",
        metavar="POLICY",
        help="also compare look-ahead sourcing (this policy; default: the packaged lookahead.yaml) with "
        "the first policy (myopic) and the clairvoyant optimum, from scarce stock; writes lookahead.json",
    )
    simulate.add_argument(
        "--stock-cover",
        type=float,
        default=1.5,
        help="--lookahead: each SKU's stock as a multiple of the stream's demand for it (default 1.5)",
    )
    simulate.add_argument(
        "--optimum-seconds",
        type=float,
        default=60.0,
        help="--lookahead: time limit of the clairvoyant optimum (its bounds are reported; default 60)",
    )
    simulate.set_defaults(func=cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
