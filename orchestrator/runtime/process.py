"""One worker process: runs one stage (a deployment) or all of them (a laptop).

The process owns what its stages share: the database pool, the metrics
registry, the HTTP server and the stop signal. SIGTERM and SIGINT stop every
stage gracefully: each finishes and commits its batch, then leaves its group.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Sequence

import asyncpg
import structlog
from aiokafka.errors import KafkaError

from orchestrator.native import decision_core
from orchestrator.runtime.dead_letter import dead_letter_topic
from orchestrator.runtime.http import start_http
from orchestrator.runtime.metrics import RuntimeMetrics
from orchestrator.runtime.pause import sleep_unless
from orchestrator.runtime.stage import Stage
from orchestrator.runtime.topics_check import missing_topics
from orchestrator.runtime.worker import StageWorker
from orchestrator.settings import Settings


class StartupError(RuntimeError):
    """The process cannot start: a clear reason for the operator."""


def application_name(stages: Sequence[str]) -> str:
    """How PostgreSQL names this process's sessions (pg_stat_activity, logs): its stages."""
    # PostgreSQL keeps the first 63 bytes; ASCII names, so characters.
    return f"orchestrator {'+'.join(stages)}"[:63]


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection going back to the pool needs beyond asyncpg's own rollback: nothing.

    asyncpg's default reset is a query (close cursors, unlisten, reset settings, unlock session
    advisory locks), one more round trip at the end of every batch. Stage code leaves no such
    state: its advisory locks are transaction-scoped, it sets no session settings, listens to
    nothing and keeps no cursor past a transaction. An open transaction is still rolled back.
    """


async def _connect_pool(settings: Settings, stop: asyncio.Event, name: str) -> asyncpg.Pool | None:
    log = structlog.get_logger("orchestrator.process")
    delay = settings.backoff_initial_s
    while not stop.is_set():
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.db_pool_max,
                command_timeout=30,
                server_settings={"application_name": name},
                reset=_keep_session,
            )
            return pool
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            log.warning("database not reachable yet; retrying", error=repr(exc), retry_in_s=delay)
            await sleep_unless(stop, delay)
            delay = min(delay * 2, settings.backoff_max_s)
    return None


async def _missing_topics_when_reachable(
    settings: Settings, needed: list[str], stop: asyncio.Event
) -> list[str] | None:
    """The topics missing from the broker, once it answers; None if stopped first.

    A stage (re)started while the broker restarts waits for it, as it would mid-run, instead of exiting.
    """
    log = structlog.get_logger("orchestrator.process")
    delay = settings.backoff_initial_s
    while not stop.is_set():
        try:
            return await missing_topics(settings.kafka, needed)
        except (KafkaError, OSError) as exc:
            log.warning("Kafka not reachable yet; retrying", error=repr(exc), retry_in_s=delay)
            await sleep_unless(stop, delay)
            delay = min(delay * 2, settings.backoff_max_s)
    return None


async def run_stages(
    stages: Sequence[Stage],
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
) -> None:
    """Run `stages` until SIGTERM/SIGINT (or `stop`), sharing one pool, registry and HTTP server."""
    if not stages:
        raise StartupError("no stage to run")
    log = structlog.get_logger("orchestrator.process")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    needed = sorted(
        {t for s in stages for t in s.inputs}
        | {dead_letter_topic(t) for s in stages for t in s.inputs if t not in s.observes}
        | {t for s in stages for t in s.outputs}
        | {v.topic for s in stages for v in s.views if v.topic}
    )
    absent = await _missing_topics_when_reachable(settings, needed, stop)
    if absent is None:
        return  # stopped while the broker was still out of reach
    if absent:
        raise StartupError(
            f"topics missing on {settings.kafka_bootstrap}: {', '.join(absent)}; "
            "run `orchestrator topics apply`"
        )

    metrics = RuntimeMetrics()
    pool = (
        await _connect_pool(settings, stop, application_name([s.name for s in stages]))
        if any(s.uses_database for s in stages)
        else None
    )
    views = list({id(v): v for s in stages for v in s.views}.values())
    workers = [StageWorker(s, settings, metrics, pool) for s in stages]
    runner = await start_http(
        metrics,
        lambda: {w.stage.name: w.healthy and all(v.ready for v in w.stage.views) for w in workers},
        settings.http_host,
        settings.http_port,
    )
    for view in views:
        bind = getattr(view, "bind_metrics", None)
        if bind is not None:
            bind(metrics)  # a view that reports something of its own (routing breakers)
        await view.start(settings, stop)
    # What exists now lives as long as the process: keep the collector from walking it again and again
    # (full collections over it pause a decision for 50-300 ms).
    gc.collect()
    gc.freeze()
    log.info(
        "process started",
        stages=[s.name for s in stages],
        http=f"http://{settings.http_host}:{settings.http_port}",
        kafka=settings.kafka_bootstrap,
        decision_core=decision_core(),
    )
    tasks = [asyncio.create_task(w.run(stop), name=f"stage:{w.stage.name}") for w in workers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            exc = failed[0].exception()
            assert exc is not None
            raise exc
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        for view in views:
            await view.close()
        if pool is not None:
            await pool.close()
        log.info("process stopped")
