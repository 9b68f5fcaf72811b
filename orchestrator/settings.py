"""Process settings, read once from the environment at start-up.

Everything that differs between a laptop and a deployment is here, and only
here; the rest of the code receives a `Settings` instance.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from orchestrator.runtime.kafka_client import PLAINTEXT, KafkaConnection, KafkaSecurity


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def env_seconds(env: Mapping[str, str], name: str) -> timedelta | None:
    """A positive duration given in seconds by `name` in `env`; None when not given (a stage's own
    timer settings, read where the stage is built)."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return timedelta(seconds=value)


def default_state_dir() -> Path:
    """Where local servers keep their data: `.state/` beside the checkout."""
    return Path.cwd() / ".state"


@dataclass(frozen=True)
class Settings:
    """What a worker process needs to know about its surroundings."""

    kafka_bootstrap: str = "127.0.0.1:9092"
    #: TLS and SASL of every Kafka client of the process (KAFKA_SECURITY_PROTOCOL, ...).
    kafka_security: KafkaSecurity = PLAINTEXT
    #: May carry a password (or name a passfile): kept out of the repr, which tracebacks and logs show.
    database_url: str = field(default="postgresql://postgres@127.0.0.1:5432/orchestrator", repr=False)
    #: Identifies this process among instances of the same stage; part of the
    #: transactional ids, so it must be stable across restarts of one instance.
    instance_id: str = field(default_factory=socket.gethostname)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    batch_max_records: int = 500
    poll_timeout_ms: int = 100
    #: A handler error that is not known to be transient is retried this many
    #: times before the event is dead-lettered (bad input never stops a stage).
    max_handler_attempts: int = 3
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    db_pool_max: int = 10
    #: How long a stage's producer waits before sending a produce or a transaction request again
    #: (aiokafka's default). A batch's transaction often begins while the coordinator still
    #: completes the last commit; the broker's check that a produced partition joined the
    #: transaction then fails as CONCURRENT_TRANSACTIONS, which Kafka answers as NotEnoughReplicas.
    #: Shorter waits sped up back-to-back transactions alone but slowed `make run` on a fresh,
    #: busy broker (README, "Back-to-back transactions").
    producer_retry_backoff_ms: int = 100
    log_level: str = "info"
    state_dir: Path = field(default_factory=default_state_dir)

    @property
    def kafka(self) -> KafkaConnection:
        """The broker address with its security: what every Kafka client of the process is built from."""
        return KafkaConnection(self.kafka_bootstrap, self.kafka_security)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        base = cls()
        return cls(
            kafka_bootstrap=e.get("KAFKA_BOOTSTRAP_SERVERS") or base.kafka_bootstrap,
            kafka_security=KafkaSecurity.from_env(e),
            database_url=e.get("DATABASE_URL") or base.database_url,
            instance_id=e.get("ORCHESTRATOR_INSTANCE_ID") or base.instance_id,
            http_host=e.get("ORCHESTRATOR_HTTP_HOST") or base.http_host,
            http_port=_int(e, "ORCHESTRATOR_HTTP_PORT", base.http_port),
            batch_max_records=_int(e, "ORCHESTRATOR_BATCH_MAX_RECORDS", base.batch_max_records),
            poll_timeout_ms=_int(e, "ORCHESTRATOR_POLL_TIMEOUT_MS", base.poll_timeout_ms),
            max_handler_attempts=_int(e, "ORCHESTRATOR_MAX_HANDLER_ATTEMPTS", base.max_handler_attempts),
            backoff_initial_s=_float(e, "ORCHESTRATOR_BACKOFF_INITIAL_S", base.backoff_initial_s),
            backoff_max_s=_float(e, "ORCHESTRATOR_BACKOFF_MAX_S", base.backoff_max_s),
            db_pool_max=_int(e, "ORCHESTRATOR_DB_POOL_MAX", base.db_pool_max),
            producer_retry_backoff_ms=_int(
                e, "ORCHESTRATOR_PRODUCER_RETRY_BACKOFF_MS", base.producer_retry_backoff_ms
            ),
            log_level=e.get("ORCHESTRATOR_LOG_LEVEL") or base.log_level,
            state_dir=Path(e["ORCHESTRATOR_STATE_DIR"])
            if e.get("ORCHESTRATOR_STATE_DIR")
            else base.state_dir,
        )
