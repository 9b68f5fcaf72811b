"""Command-line flags of the live run (`orchestrator start`) and of the
simulator processes (`orchestrator sim network|oms|nodes|carriers`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path

from orchestrator.settings import Settings
from orchestrator.sim.live.behaviour import CarrierRates, NodeRates, ReturnRates
from orchestrator.sim.live.driver import LiveOptions, NetworkSize
from orchestrator.sim.live.oms import OmsTraffic, TrafficShape
from orchestrator.sim.live.processes import Closures, publish_network, run_carriers, run_nodes, run_oms


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a rate is a share between 0 and 1, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_network_flags(parser: argparse.ArgumentParser) -> None:
    d = NetworkSize()
    parser.add_argument(
        "--seed", type=int, default=d.seed, help=f"seed of the network and traffic (default {d.seed})"
    )
    parser.add_argument("--dcs", type=int, default=d.dcs, help=f"distribution centres (default {d.dcs})")
    parser.add_argument("--stores", type=int, default=d.stores, help=f"stores (default {d.stores})")
    parser.add_argument(
        "--skus", type=int, default=d.skus, help=f"products in the catalogue (default {d.skus})"
    )


def add_oms_flags(parser: argparse.ArgumentParser) -> None:
    d = TrafficShape()
    parser.add_argument(
        "--orders", type=int, help="place this many orders, then finish (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--rate", type=_positive, default=d.rate, help=f"orders per second (default {d.rate})"
    )
    parser.add_argument(
        "--amend-rate", type=_rate, default=d.amend, help=f"share amended (default {d.amend})"
    )
    parser.add_argument(
        "--cancel-rate", type=_rate, default=d.cancel, help=f"share cancelled (default {d.cancel})"
    )
    parser.add_argument(
        "--hold-rate", type=_rate, default=d.hold, help=f"share placed on hold (default {d.hold})"
    )
    parser.add_argument(
        "--flash-sale-every",
        type=float,
        default=d.flash_sale_every_s,
        help=f"seconds between flash sales, 0 for none (default {d.flash_sale_every_s:g})",
    )


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    d, z = NodeRates(), Closures()
    parser.add_argument(
        "--reject-rate", type=_rate, default=d.reject, help=f"work orders refused (default {d.reject})"
    )
    parser.add_argument(
        "--short-pick-rate",
        type=_rate,
        default=d.short_pick,
        help=f"work orders short (default {d.short_pick})",
    )
    parser.add_argument(
        "--node-cancel-rate",
        type=_rate,
        default=d.node_cancel,
        help=f"work orders the node cancels (default {d.node_cancel})",
    )
    parser.add_argument(
        "--closures-per-minute",
        type=float,
        default=z.per_minute,
        help=f"store closures (default {z.per_minute:g})",
    )
    parser.add_argument(
        "--closure-seconds",
        type=_positive,
        default=z.seconds,
        help=f"how long one lasts (default {z.seconds:g})",
    )


def add_carrier_flags(parser: argparse.ArgumentParser) -> None:
    d = CarrierRates()
    parser.add_argument(
        "--delay-rate", type=_rate, default=d.delay, help=f"shipments delayed (default {d.delay})"
    )
    parser.add_argument(
        "--exception-rate",
        type=_rate,
        default=d.exception,
        help=f"carrier exceptions (default {d.exception})",
    )
    parser.add_argument("--lost-rate", type=_rate, default=d.lost, help=f"parcels lost (default {d.lost})")
    r = ReturnRates()
    parser.add_argument(
        "--return-rate",
        type=_rate,
        default=r.returned,
        help=f"delivered parcels from which the customer returns a unit (default {r.returned})",
    )


def _network(args: argparse.Namespace) -> NetworkSize:
    return NetworkSize(seed=args.seed, dcs=args.dcs, stores=args.stores, skus=args.skus)


def _traffic(args: argparse.Namespace) -> TrafficShape:
    return TrafficShape(
        rate=args.rate,
        amend=args.amend_rate,
        cancel=args.cancel_rate,
        hold=args.hold_rate,
        flash_sale_every_s=args.flash_sale_every,
    )


def live_options(args: argparse.Namespace) -> LiveOptions:
    return LiveOptions(
        orders=args.orders,
        network=_network(args),
        traffic=_traffic(args),
        nodes=NodeRates(
            reject=args.reject_rate, short_pick=args.short_pick_rate, node_cancel=args.node_cancel_rate
        ),
        carriers=CarrierRates(delay=args.delay_rate, exception=args.exception_rate, lost=args.lost_rate),
        returns=ReturnRates(returned=args.return_rate),
        closures=Closures(per_minute=args.closures_per_minute, seconds=args.closure_seconds),
        summary_path=Path(args.summary) if args.summary else None,
    )


def add_sim_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sim = sub.add_parser(
        "sim", help="one simulated outside system, talking to the public topics (make run starts them)"
    )
    roles = sim.add_subparsers(dest="role", required=True)
    network = roles.add_parser(
        "network", help="the network admin and ERP: nodes, carrier services, stock counts"
    )
    add_network_flags(network)
    oms = roles.add_parser(
        "oms", help="the OMS: orders with amendments, cancellations, holds and flash sales"
    )
    add_network_flags(oms)
    add_oms_flags(oms)
    oms.add_argument("--run-id", default="manual", help="part of every order id, to tell runs apart")
    nodes = roles.add_parser("nodes", help="warehouses, stores, 3PLs and vendors working the work orders")
    add_network_flags(nodes)
    add_node_flags(nodes)
    nodes.add_argument("--step-seconds", type=_positive, default=NodeRates().step_seconds)
    nodes.add_argument("--ready-file", help="create this file once listening for work orders")
    carriers = roles.add_parser("carriers", help="carriers reporting tracking events for shipped work orders")
    carriers.add_argument("--seed", type=int, default=NetworkSize().seed)
    add_carrier_flags(carriers)
    carriers.add_argument("--step-seconds", type=_positive, default=CarrierRates().step_seconds)
    carriers.add_argument("--ready-file", help="create this file once listening for shipments")
    sim.set_defaults(func=cmd_sim)


def _ready(args: argparse.Namespace) -> Callable[[], None]:
    """Say the simulator listens: on stdout, and by creating --ready-file if given."""

    def ready() -> None:
        print(f"sim {args.role}: listening", flush=True)
        if args.ready_file:
            Path(args.ready_file).touch()

    return ready


async def _until_signalled(role: str, args: argparse.Namespace, bootstrap: str) -> str:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # SIGUSR1 (nodes): stop the world's own news (restocks, store power cuts) but finish the work in
    # hand, so a run that ends can wait for every order to come to rest.
    wind_down = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, wind_down.set)
    if role == "network":
        published = await publish_network(bootstrap, _network(args).build())
        return f"published {published} network and stock events"
    if role == "oms":
        network = _network(args).build()
        traffic = OmsTraffic(network, seed=args.seed, run_id=args.run_id, shape=_traffic(args))
        placed: int = await run_oms(bootstrap, traffic, orders=args.orders, stop=stop)
        return f"placed {placed} orders"
    if role == "nodes":
        rates = NodeRates(
            reject=args.reject_rate,
            short_pick=args.short_pick_rate,
            node_cancel=args.node_cancel_rate,
            step_seconds=args.step_seconds,
        )
        closures = Closures(per_minute=args.closures_per_minute, seconds=args.closure_seconds)
        sent = await run_nodes(
            bootstrap,
            _network(args).build(),
            seed=args.seed,
            rates=rates,
            closures=closures,
            stop=stop,
            wind_down=wind_down,
            ready=_ready(args),
        )
        return f"nodes sent {dict(sent)}"
    rates_c = CarrierRates(
        delay=args.delay_rate,
        exception=args.exception_rate,
        lost=args.lost_rate,
        step_seconds=args.step_seconds,
    )
    sent = await run_carriers(
        bootstrap,
        seed=args.seed,
        rates=rates_c,
        stop=stop,
        returns=ReturnRates(returned=args.return_rate),
        ready=_ready(args),
    )
    return f"carriers sent {dict(sent)}"


def cmd_sim(args: argparse.Namespace) -> int:
    bootstrap = Settings.from_env().kafka_bootstrap
    print(f"sim {args.role}: Kafka {bootstrap}", flush=True)
    print(asyncio.run(_until_signalled(args.role, args, bootstrap)), flush=True)
    return 0


def add_live_flags(parser: argparse.ArgumentParser) -> None:
    add_network_flags(parser)
    add_oms_flags(parser)
    add_node_flags(parser)
    add_carrier_flags(parser)
    parser.add_argument("--summary", help="also write the end-of-run summary as JSON to this file")
    parser.add_argument(
        "--no-traffic", action="store_true", help="only the stages, no simulators (as before)"
    )


__all__ = ["add_live_flags", "add_sim_parser", "cmd_sim", "live_options"]
