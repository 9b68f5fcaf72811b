"""structlog set-up: one JSON object per line, with the stage's context on every line.

The worker binds stage, order id, event id and trace id around each handler
call (contextvars), so a handler's own log lines carry them without asking.

No secret reaches a log line: `redact_secrets` (structlog) and `RedactingFilter`
(the standard library's records, aiokafka's and asyncpg's) mask the password
of every URL/DSN, `password=...`-style pairs, values under secret-sounding
keys, and every secret registered with `register_secret` wherever it appears.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

MASK = "***"
#: Keys whose values are secrets whatever they look like (matched case-insensitively, anywhere in the key).
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?$|passw|secret|token|credential|api_?key|private_?key|jaas", re.I
)
#: `scheme://user:password@host`: the password of a URL or DSN.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)(?P<tail>@)", re.I)
#: `password=x`, `password: x`, `password="x"` (libpq conninfo, JAAS, reprs of settings).
_PAIR_PASSWORD = re.compile(
    r"(?P<head>\b(?![\w.\-]*file\b)[\w.\-]*(?:password|passwd|secret|token)[\w.\-]*[\"']?\s*[=:]\s*)"
    r"(?P<secret>\"[^\"]*\"|'[^']*'|[^\s,;&)}\]]+)",
    re.I,
)
#: Secret values known to this process (Kafka SASL password, ...): masked wherever they appear.
_KNOWN: set[str] = set()
#: Shorter values would mask ordinary words; real passwords are longer.
_MIN_KNOWN_LENGTH = 6


def register_secret(value: str | None) -> None:
    """Mask `value` in every later log line, wherever it appears."""
    if value and len(value) >= _MIN_KNOWN_LENGTH:
        _KNOWN.add(value)


def redact_text(text: str) -> str:
    """`text` with URL passwords, `password=...` pairs and registered secrets masked."""
    for secret in _KNOWN:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _PAIR_PASSWORD.sub(
        lambda m: m["head"] + (m["secret"] if m["secret"].strip("\"'") == MASK else MASK), text
    )


def _is_secret_key(key: str) -> bool:
    # `password_file` names where a secret is, which is worth seeing in a log.
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith("file")


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and _is_secret_key(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    # Anything else reaches the line through its repr (the JSON renderer's fallback): redact that text.
    return redact_text(repr(value))


def redact_secrets(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: masks secrets in every field of the event (run it after format_exc_info)."""
    for key in list(event_dict):
        value = event_dict[key]
        if _is_secret_key(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = _redact(value)
    return event_dict


class RedactingFilter(logging.Filter):
    """Masks secrets in standard-library log records before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def configure_logging(level: str = "info", *, json: bool = True, stream: TextIO | None = None) -> None:
    """structlog to `stream` (default stderr), the standard library's warnings alongside; secrets masked."""
    out = stream if stream is not None else sys.stderr
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    # aiokafka and asyncpg log through the standard library: same stream, warnings and up. One handler
    # of ours (replaced when called again), carrying the filter, whatever else is on the root logger.
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_orchestrator", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(out)
    handler._orchestrator = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
