"""Local development infrastructure: a real Kafka (KRaft) broker and PostgreSQL, no Docker.

`infra_up` starts both in a state folder (or takes them from KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL), `infra_down` stops them, `infra_status` reports on them.
`testcontainers_endpoints` is the alternative for machines with a Docker engine.
"""

from orchestrator.infra.kafka_local import KAFKA_VERSION, InfraError, LocalKafka
from orchestrator.infra.manager import (
    Endpoints,
    infra_down,
    infra_status,
    infra_up,
    testcontainers_endpoints,
)
from orchestrator.infra.postgres_local import LocalPostgres

__all__ = [
    "KAFKA_VERSION",
    "Endpoints",
    "InfraError",
    "LocalKafka",
    "LocalPostgres",
    "infra_down",
    "infra_status",
    "infra_up",
    "testcontainers_endpoints",
]
