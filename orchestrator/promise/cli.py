"""`orchestrator promise serve|openapi`: run the promise API, or write its OpenAPI document."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

#: Where the generated document is kept in the repository (tests check it is current).
OPENAPI_PATH = Path(__file__).resolve().parents[2] / "docs" / "promise-openapi.json"


def render_openapi() -> str:
    from orchestrator.promise.openapi import openapi_document

    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


def cmd_promise(args: argparse.Namespace) -> int:
    if args.action == "openapi":
        return _openapi(args)
    from orchestrator.cli import resolve_settings
    from orchestrator.domain.policy import PolicyError, load_policy
    from orchestrator.promise.service import serve_promise
    from orchestrator.runtime.logging import configure_logging

    settings = resolve_settings()
    configure_logging(settings.log_level)
    try:
        policy = load_policy()
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def ready(addresses: list[tuple[str, int]]) -> None:
        where = ", ".join(f"http://{host}:{port}" for host, port in addresses)
        print(
            f"promise API on {where} (no authentication; /healthz says when its views caught up)", flush=True
        )

    try:
        asyncio.run(serve_promise(settings, policy, args.host, args.port, ready=ready))
    except OSError as exc:
        print(f"error: cannot serve the promise API: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _openapi(args: argparse.Namespace) -> int:
    text = render_openapi()
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out) if args.out else OPENAPI_PATH
    current = out.read_text(encoding="utf-8") if out.exists() else None
    if args.check:
        if current != text:
            print(f"{out} is out of date with the promise models: run `orchestrator promise openapi`")
            return 1
        print(f"{out} is up to date")
        return 0
    if current != text:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}")
    else:
        print(f"{out} is already up to date")
    return 0


def add_promise_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from orchestrator.promise.service import DEFAULT_HOST, DEFAULT_PORT

    promise = sub.add_parser(
        "promise", help="the availability and delivery promise API (serve), or its OpenAPI document"
    )
    promise.add_argument("action", choices=["serve", "openapi"])
    promise.add_argument(
        "--host", default=DEFAULT_HOST, help=f"serve: address to bind (default {DEFAULT_HOST})"
    )
    promise.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"serve: port (default {DEFAULT_PORT})"
    )
    promise.add_argument(
        "--out", help="openapi: file to write, - for stdout (default docs/promise-openapi.json)"
    )
    promise.add_argument("--check", action="store_true", help="openapi: exit 1 when the file is out of date")
    promise.set_defaults(func=cmd_promise)


__all__ = ["OPENAPI_PATH", "add_promise_parser", "cmd_promise", "render_openapi"]
