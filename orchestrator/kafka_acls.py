"""Kafka principals and ACLs, generated from the topic catalog (`topics.yaml`).

Each stage runs as its own principal, `orchestrator-<stage>`, allowed exactly
what its rows of the catalog say: read the topics it consumes or observes,
write the topics it produces (its dead-letter topics included), use its
consumer group `orchestrator.<stage>`, its transactional ids
(`orchestrator.<stage>.` + topic + partition, see runtime/worker.py) and
idempotent writes. The services beside the stages (the promise API) run as
`orchestrator-<service>` too, allowed only to read the topics they follow
whole (`readers` in the catalog): no group, no writes. Outside systems
(`external:<system>` in the catalog) get `external-<system>` with their
topics and groups named `external.<system>.*`.

`orchestrator topics acls` prints the `kafka-acls.sh` commands (and writes
deploy/kafka/acls.sh); local secure mode applies the same list directly.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import IncompatibleBrokerVersion, for_code
from aiokafka.protocol.admin import CreateAclsRequest, CreateAclsRequestStruct

from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs
from orchestrator.topics import SERVICE_NAMES, STAGE_NAMES, TopicCatalog

#: Kafka's one cluster resource name.
CLUSTER = "kafka-cluster"

# The wire codes of Kafka's ACL enums (org.apache.kafka.common.acl / resource).
_RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3, "CLUSTER": 4, "TRANSACTIONAL_ID": 5}
_PATTERNS = {"LITERAL": 3, "PREFIXED": 4}
_OPERATIONS = {"READ": 3, "WRITE": 4, "DESCRIBE": 8, "IDEMPOTENT_WRITE": 12}
_ALLOW = 3
# kafka-acls.sh's spelling of each.
_CLI_OPERATION = {
    "READ": "Read",
    "WRITE": "Write",
    "DESCRIBE": "Describe",
    "IDEMPOTENT_WRITE": "IdempotentWrite",
}
_CLI_RESOURCE = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}


class AclApplyError(RuntimeError):
    """The broker refused to create an ACL (not authorised, no authorizer configured...)."""


@dataclass(frozen=True, order=True)
class Acl:
    """One allow rule: `principal` may do `operation` on the resource (any host)."""

    principal: str
    resource_type: str
    resource_name: str
    operation: str
    pattern: str = "LITERAL"


def stage_user(stage: str) -> str:
    """The SCRAM user (principal name without `User:`) a stage or a service runs as."""
    return f"orchestrator-{stage}"


def stage_users() -> tuple[str, ...]:
    """Every stage's and every service's user."""
    return tuple(stage_user(s) for s in (*STAGE_NAMES, *SERVICE_NAMES))


def _external_user(party: str) -> str:
    return "external-" + party.removeprefix("external:")


def stage_acls(catalog: TopicCatalog, stage: str) -> list[Acl]:
    """What `stage` needs, and nothing more (READ and WRITE each imply DESCRIBE)."""
    principal = f"User:{stage_user(stage)}"
    acls = [
        Acl(principal, "TOPIC", t.name, "READ")
        for t in catalog.all_topics()
        if stage in t.consumers or stage in t.observers
    ]
    acls += [Acl(principal, "TOPIC", t.name, "WRITE") for t in catalog.all_topics() if stage in t.producers]
    acls += [
        Acl(principal, "GROUP", f"orchestrator.{stage}", "READ"),
        # One transactional id per input partition; the prefix keeps a new partition covered.
        Acl(principal, "TRANSACTIONAL_ID", f"orchestrator.{stage}.", "WRITE", "PREFIXED"),
        Acl(principal, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE"),
    ]
    return sorted(set(acls))


def service_acls(catalog: TopicCatalog, service: str) -> list[Acl]:
    """A service reads the topics it follows whole, with no consumer group: READ on them, nothing else."""
    principal = f"User:{stage_user(service)}"
    return sorted(
        Acl(principal, "TOPIC", t.name, "READ") for t in catalog.all_topics() if service in t.readers
    )


def external_acls(catalog: TopicCatalog) -> list[Acl]:
    """The outside systems' rules: their topics, their groups `external.<system>.*`, idempotent writes."""
    acls: set[Acl] = set()
    for t in catalog.all_topics():
        for party in (*t.producers, *t.consumers):
            if party in STAGE_NAMES:
                continue
            principal = f"User:{_external_user(party)}"
            op = "WRITE" if party in t.producers else "READ"
            acls.add(Acl(principal, "TOPIC", t.name, op))
            if op == "READ":
                name = party.removeprefix("external:")
                acls.add(Acl(principal, "GROUP", f"external.{name}.", "READ", "PREFIXED"))
            else:
                acls.add(Acl(principal, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE"))
    return sorted(acls)


def catalog_acls(catalog: TopicCatalog, *, externals: bool = True) -> list[Acl]:
    """Every stage's rules, the services', then (by default) the outside systems'."""
    acls = [a for s in STAGE_NAMES for a in stage_acls(catalog, s)]
    acls += [a for s in SERVICE_NAMES for a in service_acls(catalog, s)]
    return acls + (external_acls(catalog) if externals else [])


def acl_script(acls: Sequence[Acl]) -> str:
    """A shell script of `kafka-acls.sh --add` commands, one per principal, resource kind and operation."""
    grouped: dict[tuple[str, str, str, str], list[str]] = defaultdict(list)
    for a in acls:
        grouped[(a.principal, a.resource_type, a.pattern, a.operation)].append(a.resource_name)
    lines = [
        "#!/bin/sh",
        "# Generated by `orchestrator topics acls` from topics.yaml: do not edit, regenerate.",
        "# BOOTSTRAP: the brokers; ADMIN_CONFIG: a client properties file of a principal allowed to",
        "# alter ACLs (security.protocol, sasl.mechanism, sasl.jaas.config, ssl.truststore.*).",
        "set -eu",
        ': "${BOOTSTRAP:?set BOOTSTRAP to the brokers}"',
        ': "${ADMIN_CONFIG:?set ADMIN_CONFIG to the admin client properties file}"',
        ': "${KAFKA_ACLS:=kafka-acls.sh}"',
        "",
    ]
    current = ""
    for (principal, rtype, pattern, op), names in grouped.items():
        if principal != current:
            lines.append(f"# {principal}")
            current = principal
        args = ["--add", "--allow-principal", principal, "--operation", _CLI_OPERATION[op]]
        if pattern == "PREFIXED":
            args += ["--resource-pattern-type", "prefixed"]
        if rtype == "CLUSTER":
            args.append("--cluster")
        else:
            for name in sorted(names):
                args += [_CLI_RESOURCE[rtype], name]
        lines.append(
            '"$KAFKA_ACLS" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" '
            + " ".join(shlex.quote(a) for a in args)
        )
    return "\n".join(lines) + "\n"


def _shown_name(a: Acl) -> str:
    return a.resource_name + ("*" if a.pattern == "PREFIXED" else "")


def acl_table(acls: Iterable[Acl]) -> str:
    """One line per rule, for people: principal, operation, resource."""
    rows = [
        (
            a.principal,
            a.operation,
            a.resource_type,
            a.resource_name + ("*" if a.pattern == "PREFIXED" else ""),
        )
        for a in acls
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3] for r in rows
        )
        + "\n"
    )


class _CreateAcls(CreateAclsRequest):  # type: ignore[misc]
    """CreateAcls carrying many rules: aiokafka's own request class carries one, and every request
    waits for a metadata commit (about 0.1 s each on a small box)."""

    def __init__(self, acls: Sequence[Acl]) -> None:
        self._acls = acls

    def build(self, request_struct_class: type[CreateAclsRequestStruct]) -> CreateAclsRequestStruct:
        if request_struct_class.API_VERSION < 1:
            # v0 has no pattern type: prefixed rules would silently become literal ones.
            raise IncompatibleBrokerVersion("CreateAcls v1 (Kafka 2.0) or newer is needed")
        return request_struct_class(
            [
                (
                    _RESOURCE_TYPES[a.resource_type],
                    a.resource_name,
                    _PATTERNS[a.pattern],
                    a.principal,
                    "*",
                    _OPERATIONS[a.operation],
                    _ALLOW,
                )
                for a in self._acls
            ]
        )


async def apply_acls(bootstrap: Bootstrap, acls: Sequence[Acl], *, timeout_s: float = 30.0) -> int:
    """Create `acls` on the broker (creating an existing rule is a no-op); returns how many were sent.

    aiokafka's admin client has no ACL call, so a CreateAcls request (from its
    protocol module) is sent with its plain client.
    """
    client = AIOKafkaClient(
        **client_kwargs(bootstrap), client_id="orchestrator-acls", request_timeout_ms=int(timeout_s * 1000)
    )
    await client.bootstrap()
    try:
        response = await client.send(client.get_random_node(), _CreateAcls(acls))
        failures = [
            f"{a}: {message or for_code(code).__name__}"
            for a, (code, message) in zip(acls, response.creation_responses, strict=True)
            if code != 0
        ]
        if failures:
            raise AclApplyError("Kafka refused ACL(s): " + "; ".join(failures))
        return len(acls)
    finally:
        await client.close()
