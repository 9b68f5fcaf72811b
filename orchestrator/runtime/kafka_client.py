"""How every Kafka client of the project connects: bootstrap servers plus security.

`client_kwargs` is the one place that turns a connection into aiokafka
keyword arguments; every `AIOKafkaProducer`, `AIOKafkaConsumer` and
`AIOKafkaAdminClient` is built with it, so TLS and SASL/SCRAM reach them all.

Code that only has a bootstrap string (tools, simulators, benchmarks) passes
it as it is: a bare string takes its security from the environment
(`KAFKA_SECURITY_PROTOCOL`, ...), so a deployment configures security once.
Code that knows better (a test against a server of its own, a worker given
`Settings`) passes a `KafkaConnection`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator.runtime.logging import register_secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


class KafkaConfigError(ValueError):
    """The Kafka security settings are incomplete or contradictory."""


@dataclass(frozen=True)
class KafkaSecurity:
    """Transport and authentication of a Kafka client; PLAINTEXT without credentials by default."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    #: Never in a repr (Settings are logged and printed in tracebacks).
    password: str | None = field(default=None, repr=False)
    #: CA bundle (PEM) that signed the broker's certificate; None: the system's trust store.
    cafile: str | None = None
    #: Where the password was read from, so child processes get the file, not the secret.
    password_file: str | None = None

    def __post_init__(self) -> None:
        # Masked in every log line from now on, however it would get there (an exception's text...).
        register_secret(self.password)
        if self.protocol not in PROTOCOLS:
            raise KafkaConfigError(
                f"KAFKA_SECURITY_PROTOCOL {self.protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise KafkaConfigError(
                    f"KAFKA_SASL_MECHANISM {self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}"
                )
            if not self.username or self.password is None:
                raise KafkaConfigError(
                    f"{self.protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD "
                    "(or KAFKA_SASL_PASSWORD_FILE)"
                )

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSecurity:
        """From KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME,
        KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, and KAFKA_SSL_CAFILE."""
        e = os.environ if env is None else env
        protocol = (e.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").strip().upper()
        password = e.get("KAFKA_SASL_PASSWORD") or None
        password_file = e.get("KAFKA_SASL_PASSWORD_FILE") or None
        if password is None and password_file:
            try:
                # A trailing newline is how editors save files, never part of a password.
                password = Path(password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                raise KafkaConfigError(f"KAFKA_SASL_PASSWORD_FILE cannot be read: {exc}") from exc
        mechanism = e.get("KAFKA_SASL_MECHANISM") or None
        if protocol.startswith("SASL_") and mechanism is None:
            mechanism = "SCRAM-SHA-512"
        return cls(
            protocol=protocol,
            sasl_mechanism=mechanism.strip().upper() if mechanism else None,
            username=e.get("KAFKA_SASL_USERNAME") or None,
            password=password,
            cafile=e.get("KAFKA_SSL_CAFILE") or None,
            password_file=password_file,
        )

    def as_user(self, username: str, password: str, password_file: str | None = None) -> KafkaSecurity:
        """The same transport with other credentials (a stage's own principal)."""
        return replace(self, username=username, password=password, password_file=password_file)

    def env(self) -> dict[str, str]:
        """Environment variables that recreate this in a child process.

        With a password file only its path is passed; the secret itself goes
        into the environment only when it was given that way.
        """
        out = {"KAFKA_SECURITY_PROTOCOL": self.protocol}
        if self.sasl_mechanism:
            out["KAFKA_SASL_MECHANISM"] = self.sasl_mechanism
        if self.username:
            out["KAFKA_SASL_USERNAME"] = self.username
        if self.password_file:
            out["KAFKA_SASL_PASSWORD_FILE"] = self.password_file
        elif self.password is not None:
            out["KAFKA_SASL_PASSWORD"] = self.password
        if self.cafile:
            out["KAFKA_SSL_CAFILE"] = self.cafile
        return out

    def client_kwargs(self) -> dict[str, Any]:
        """aiokafka's security keyword arguments for this (no bootstrap)."""
        if self.protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            from aiokafka.helpers import create_ssl_context

            # Hostname checking stays on (create_ssl_context's default): the certificate
            # must name the host in the bootstrap address.
            kwargs["ssl_context"] = create_ssl_context(cafile=self.cafile)
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaConnection:
    """A broker address with the security to reach it; prints as the address alone."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT

    def __str__(self) -> str:
        return self.bootstrap


#: What client-building functions accept: a connection, or a bare bootstrap string
#: whose security comes from the environment.
Bootstrap = str | KafkaConnection


def kafka_connection(target: Bootstrap) -> KafkaConnection:
    """`target` as a connection; a bare bootstrap string takes its security from the environment."""
    if isinstance(target, KafkaConnection):
        return target
    return KafkaConnection(target, KafkaSecurity.from_env())


def client_kwargs(target: Bootstrap) -> dict[str, Any]:
    """The keyword arguments every aiokafka client of the project is built with."""
    conn = kafka_connection(target)
    return {"bootstrap_servers": conn.bootstrap, **conn.security.client_kwargs()}


__all__ = [
    "PLAINTEXT",
    "Bootstrap",
    "KafkaConfigError",
    "KafkaConnection",
    "KafkaSecurity",
    "client_kwargs",
    "kafka_connection",
]
