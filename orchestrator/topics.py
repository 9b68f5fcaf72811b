"""The topic catalog (`topics.yaml`): load it, check it, print it, apply it to Kafka.

`topics.yaml` is the one map of the data flow: every topic with its key,
the event types it carries, who produces and who consumes it, and how long
it keeps records. Every topic a stage consumes has a dead-letter topic
(`<topic>.dlq`), declared by name in the file and derived here.

Applying never destroys: missing topics are created, existing ones are
compared and differences reported; partitions are added only when asked,
because adding partitions moves keys (and so per-order ordering) for
records produced afterwards.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.contract.registry import EVENT_TYPES
from orchestrator.runtime.kafka_client import Bootstrap, client_kwargs

#: Environment variable naming the catalog file, overriding the default.
TOPICS_FILE_ENV = "ORCHESTRATOR_TOPICS_FILE"
#: The stages of DESIGN.md, in flow order.
STAGE_NAMES: tuple[str, ...] = (
    "ingest",
    "validate",
    "decide-node",
    "reserve",
    "release",
    "monitor",
    "exceptions",
    "status-sync",
    "returns",
)
#: Services beside the stages that read topics whole as views (no consumer group, no dead letters).
SERVICE_NAMES: tuple[str, ...] = ("promise",)
#: Same rule as `orchestrator.runtime.dead_letter.dead_letter_topic` (a test keeps them equal);
#: not imported from there so the runtime may import the catalog without a cycle.
DEAD_LETTER_SUFFIX = ".dlq"
#: Retention value meaning "keep forever" (Kafka's -1).
FOREVER = -1
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000
DEFAULT_DEAD_LETTER_RETENTION_MS = 30 * 24 * 3600 * 1000

_EXTERNAL = re.compile(r"^external:[a-z0-9][a-z0-9_\-]*$")
# Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
_FOREVER_WORDS = frozenset({"forever", "infinite", "unlimited", "-1"})
_CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete"})


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or inconsistent; the message says where and why."""


class TopicApplyError(RuntimeError):
    """Kafka refused to create a topic (bad config, not enough brokers for the replication factor...)."""


def default_catalog_path() -> Path:
    """`$ORCHESTRATOR_TOPICS_FILE`, else `topics.yaml` at the root of the checkout."""
    env = os.environ.get(TOPICS_FILE_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "topics.yaml"


# ---------------------------------------------------------------------------
# Retention: "7d" <-> 604800000
# ---------------------------------------------------------------------------


def parse_retention(value: object) -> int:
    """Milliseconds from `7d`, `36h`, `90m`, `3600s`, `500ms`, `2w`, a number of ms, or `forever` (-1)."""
    if isinstance(value, bool):
        raise ValueError(f"retention {value!r} is not a duration")
    if isinstance(value, int):
        if value == FOREVER or value > 0:
            return value
        raise ValueError(f"retention {value} ms must be positive (or -1 / forever)")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FOREVER_WORDS:
            return FOREVER
        if text.isdigit():
            return parse_retention(int(text))
        match = _DURATION.fullmatch(text)
        if match:
            ms = int(match.group(1)) * _UNITS_MS[match.group(2)]
            if ms > 0:
                return ms
    raise ValueError(
        f"retention {value!r} is not a duration "
        "(use e.g. 7d, 36h, 90m, 3600s, 500ms, a number of ms, or forever)"
    )


def format_retention(ms: int) -> str:
    """The shortest exact human form of a retention: 604800000 -> `7d`, -1 -> `forever`."""
    if ms == FOREVER:
        return "forever"
    # Weeks are parsed but not printed: "7d" reads better than "1w" in a retention column.
    for unit in ("d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


RetentionMs = Annotated[int, BeforeValidator(parse_retention)]
TopicName = Annotated[str, StringConstraints(pattern=_TOPIC_NAME.pattern)]


def _config_value(value: object) -> str:
    # YAML reads `true` and `1000` as bool/int; Kafka wants strings ("true", "1000").
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"config values must be strings or numbers, got {type(value).__name__}")


def _normalise_config(key: str, value: str) -> str:
    value = value.strip()
    if key == "cleanup.policy":
        return ",".join(sorted(p.strip() for p in value.split(",")))
    return value


# ---------------------------------------------------------------------------
# The catalog model
# ---------------------------------------------------------------------------


class TopicSpec(BaseModel):
    """One topic as the catalog declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: TopicName = Field(description="Exact Kafka topic name.")
    description: str = Field(default="", description="One sentence for people.")
    partitions: PositiveInt = Field(description="Partition count (>= 1).")
    key: str = Field(min_length=1, description="What the record key is.")
    schemas: tuple[str, ...] = Field(default=(), description="Event types carried.")
    producers: tuple[str, ...] = Field(min_length=1, description="Stage names or external:<system>.")
    consumers: tuple[str, ...] = Field(default=(), description="Stage names or external:<system>.")
    observers: tuple[str, ...] = Field(
        default=(),
        description="Stages that read the topic only to record it (status-sync's event store); the "
        "consumers own its dead letters.",
    )
    readers: tuple[str, ...] = Field(
        default=(),
        description="Services that read the topic whole as a view, with no consumer group and no dead "
        "letters (the promise API).",
    )
    retention_ms: RetentionMs = Field(
        default=DEFAULT_RETENTION_MS,
        validation_alias=AliasChoices("retention", "retention_ms"),
        description="Retention in ms (-1: forever).",
    )
    config: dict[str, str] = Field(default_factory=dict, description="Kafka topic config overrides.")
    dead_letter: TopicName | None = Field(default=None, description="Dead-letter topic (`<name>.dlq`).")

    @field_validator("schemas")
    @classmethod
    def _known_event_types(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in v if s not in EVENT_TYPES]
        if unknown:
            raise ValueError(
                f"unknown event type(s) {', '.join(map(repr, unknown))}; "
                "every schema must be a registered type (orchestrator/contract/registry.py)"
            )
        if len(set(v)) != len(v):
            raise ValueError("an event type is listed twice")
        return v

    @field_validator("producers", "consumers", "observers")
    @classmethod
    def _known_parties(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if p not in STAGE_NAMES and not _EXTERNAL.fullmatch(p)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: not a stage ({', '.join(STAGE_NAMES)}) nor external:<system>"
            )
        if len(set(v)) != len(v):
            raise ValueError("a party is listed twice")
        return v

    @field_validator("readers")
    @classmethod
    def _known_services(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if p not in SERVICE_NAMES]
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: not a service ({', '.join(SERVICE_NAMES)})")
        if len(set(v)) != len(v):
            raise ValueError("a service is listed twice")
        return v

    @field_validator("config", mode="before")
    @classmethod
    def _config_strings(cls, v: object) -> object:
        if isinstance(v, Mapping):
            return {str(k): _config_value(val) for k, val in v.items()}
        return v

    @field_validator("config")
    @classmethod
    def _config_sane(cls, v: dict[str, str]) -> dict[str, str]:
        if "retention.ms" in v:
            raise ValueError("set retention with `retention:`, not config retention.ms")
        policy = v.get("cleanup.policy")
        if policy is not None and _normalise_config("cleanup.policy", policy) not in _CLEANUP_POLICIES:
            raise ValueError(f"cleanup.policy {policy!r} is not delete, compact or compact,delete")
        return v

    @model_validator(mode="after")
    def _schemas_match_key(self) -> Self:
        # When the key names a payload field, every event on the topic must be keyed by it,
        # or its events would not share a partition with the rest of that key's story.
        if _FIELD_NAME.fullmatch(self.key):
            wrong = [
                f"{s} (keyed by {EVENT_TYPES[s].subject_field})"
                for s in self.schemas
                if EVENT_TYPES[s].subject_field != self.key
            ]
            if wrong:
                raise ValueError(f"key is {self.key!r} but the topic carries {', '.join(wrong)}")
        return self

    @property
    def is_dead_letter(self) -> bool:
        return self.name.endswith(DEAD_LETTER_SUFFIX)

    @property
    def stage_consumers(self) -> tuple[str, ...]:
        return tuple(c for c in self.consumers if c in STAGE_NAMES)

    @property
    def stage_producers(self) -> tuple[str, ...]:
        return tuple(p for p in self.producers if p in STAGE_NAMES)

    def kafka_config(self) -> dict[str, str]:
        """The topic configs Kafka should have: retention, cleanup policy, then the overrides."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": "delete", **self.config}


def dead_letter_name(topic: str) -> str:
    """The dead-letter topic of `topic`."""
    return topic + DEAD_LETTER_SUFFIX


def _catalog_problems(topics: Sequence[TopicSpec]) -> list[str]:
    """Consistency rules that span topics; each problem names its topic."""
    problems: list[str] = []
    seen: set[str] = set()
    for t in topics:
        if t.name in seen:
            problems.append(f"topic {t.name!r}: declared more than once")
        seen.add(t.name)
    for t in topics:
        where = f"topic {t.name!r}"
        if t.is_dead_letter:
            problems.append(
                f"{where}: dead-letter topics are not declared on their own; "
                f"set `dead_letter: {t.name}` on {t.name.removesuffix(DEAD_LETTER_SUFFIX)!r}"
            )
            continue
        expected = dead_letter_name(t.name)
        if t.stage_consumers and t.dead_letter is None:
            problems.append(
                f"{where}: consumed by {', '.join(t.stage_consumers)} but has no dead_letter "
                f"(add `dead_letter: {expected}`)"
            )
        elif t.dead_letter is not None and t.dead_letter != expected:
            problems.append(f"{where}: dead_letter must be named {expected!r}, not {t.dead_letter!r}")
        elif t.dead_letter is not None and not t.stage_consumers:
            problems.append(
                f"{where}: has dead_letter {t.dead_letter!r} but no stage consumes it "
                "(only stages dead-letter; remove it)"
            )
        if t.dead_letter is not None and t.dead_letter in seen:
            problems.append(f"{where}: its dead_letter {t.dead_letter!r} is also declared as a topic")
    return problems


class TopicCatalog(BaseModel):
    """Every declared topic, plus the dead-letter topics derived from them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topics: tuple[TopicSpec, ...] = Field(min_length=1)
    dead_letter_retention_ms: RetentionMs = DEFAULT_DEAD_LETTER_RETENTION_MS
    #: Where the catalog was read from (None: built in code); used in messages only.
    source: Path | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _catalog_problems(self.topics)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def dead_letter_spec(self, topic: TopicSpec) -> TopicSpec:
        """The derived dead-letter topic of `topic` (which must have one)."""
        if topic.dead_letter is None:
            raise KeyError(f"topic {topic.name!r} has no dead-letter topic")
        return TopicSpec(
            name=topic.dead_letter,
            description=f"Records of {topic.name} that a stage could not parse or handle, "
            "untouched, with the reason in dlq_* headers.",
            partitions=topic.partitions,
            key=topic.key,
            producers=topic.stage_consumers,
            consumers=("external:operators",),
            retention_ms=self.dead_letter_retention_ms,
        )

    def all_topics(self) -> tuple[TopicSpec, ...]:
        """Declared topics in file order, each followed by its dead-letter topic."""
        out: list[TopicSpec] = []
        for t in self.topics:
            out.append(t)
            if t.dead_letter is not None:
                out.append(self.dead_letter_spec(t))
        return tuple(out)

    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.all_topics())

    def get(self, name: str) -> TopicSpec:
        for t in self.all_topics():
            if t.name == name:
                return t
        raise KeyError(f"topic {name!r} is not in the catalog{f' ({self.source})' if self.source else ''}")

    def inputs_of(self, stage: str) -> tuple[str, ...]:
        """Topics `stage` consumes."""
        return tuple(t.name for t in self.topics if stage in t.consumers)

    def outputs_of(self, stage: str) -> tuple[str, ...]:
        """Topics `stage` produces (dead-letter topics included)."""
        return tuple(t.name for t in self.all_topics() if stage in t.producers)

    def topics_carrying(self, event_type: str) -> tuple[str, ...]:
        return tuple(t.name for t in self.topics if event_type in t.schemas)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _format_validation_error(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def load_catalog(path: Path | None = None) -> TopicCatalog:
    """Read and check the catalog; `CatalogError` lists every problem with the file and topic name."""
    source = path if path is not None else default_catalog_path()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "" if path is not None else f" (set {TOPICS_FILE_ENV} to the catalog's path)"
        raise CatalogError(f"{source}: topic catalog not found{hint}") from None
    except OSError as exc:
        raise CatalogError(f"{source}: cannot read the topic catalog: {exc}") from None
    return parse_catalog(text, source=source)


def parse_catalog(text: str, *, source: Path | None = None) -> TopicCatalog:
    """Check a catalog given as YAML text (`source` only names it in messages)."""
    where = str(source) if source is not None else "<topics.yaml>"
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a mapping with a `topics` list at the top level")
    unknown = sorted(set(raw) - {"defaults", "dead_letters", "topics"})
    if unknown:
        raise CatalogError(
            f"{where}: unknown top-level key(s) {', '.join(unknown)} "
            "(expected defaults, dead_letters, topics)"
        )
    problems: list[str] = []

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            problems.append(f"{name}: expected a mapping")
            return {}
        extra = sorted(set(value) - {"retention"})
        if extra:
            problems.append(f"{name}: unknown key(s) {', '.join(map(str, extra))} (only retention)")
        return value

    defaults, dead_letters = section("defaults"), section("dead_letters")
    default_retention: object = defaults.get("retention", DEFAULT_RETENTION_MS)
    dlq_retention: int = DEFAULT_DEAD_LETTER_RETENTION_MS
    try:
        parse_retention(default_retention)
    except ValueError as exc:
        problems.append(f"defaults.retention: {exc}")
        default_retention = DEFAULT_RETENTION_MS
    try:
        dlq_retention = parse_retention(dead_letters.get("retention", DEFAULT_DEAD_LETTER_RETENTION_MS))
    except ValueError as exc:
        problems.append(f"dead_letters.retention: {exc}")

    entries = raw.get("topics")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{where}: `topics` must be a non-empty list")
    specs: list[TopicSpec] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"topics[{i}]: expected a mapping with name, partitions, key...")
            continue
        label = f"topic {entry['name']!r}" if isinstance(entry.get("name"), str) else f"topics[{i}]"
        data = dict(entry)
        if "retention" not in data and "retention_ms" not in data:
            data["retention"] = default_retention
        try:
            specs.append(TopicSpec.model_validate(data))
        except ValidationError as exc:
            problems.extend(f"{label}: {line}" for line in _format_validation_error(exc))
    # Cross-topic rules run on the topics that parsed, so one pass reports everything.
    problems.extend(_catalog_problems(specs))
    if problems:
        raise CatalogError(f"{where}: " + f"\n{where}: ".join(problems))
    return TopicCatalog(topics=tuple(specs), dead_letter_retention_ms=dlq_retention, source=source)


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


def format_catalog(catalog: TopicCatalog) -> str:
    """A table of every topic (dead-letter topics included), for `orchestrator topics list`.

    List cells (producers, consumers, schemas) take one line per item.
    """
    header = ("NAME", "PARTS", "KEY", "PRODUCERS", "CONSUMERS", "RETENTION", "SCHEMAS")
    rows: list[tuple[list[str], ...]] = []
    for t in catalog.all_topics():
        if t.is_dead_letter:
            schemas = ["(raw records, any type)"]
        else:
            schemas = list(t.schemas) or ["(internal, none yet)"]
        rows.append(
            (
                [t.name],
                [str(t.partitions)],
                [t.key],
                list(t.producers) or ["-"],
                [*t.consumers, *(f"{o} (observes)" for o in t.observers), *(f"{r} (view)" for r in t.readers)]
                or ["-"],
                [format_retention(t.retention_ms)],
                schemas,
            )
        )
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(s) for s in cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    for row in rows:
        height = max(len(cell) for cell in row)
        for k in range(height):
            out.append(line([cell[k] if k < len(cell) else "" for cell in row]))
    out.append("")
    out.append(
        f"{len(catalog.topics)} topics, {len(catalog.all_topics()) - len(catalog.topics)} dead-letter topics"
        + (f" ({catalog.source})" if catalog.source else "")
    )
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Applying to Kafka
# ---------------------------------------------------------------------------

_TOPIC_ALREADY_EXISTS = 36


@dataclass
class ApplyReport:
    """What `apply_topics` did and found: created, unchanged, grown, and what differs."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    #: One human sentence per difference between the catalog and the broker, naming the topic.
    differences: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """True when every topic now matches the catalog."""
        return not self.differences

    def render(self) -> str:
        lines: list[str] = []
        for name in self.created:
            lines.append(f"created    {name}")
        for what in self.grown:
            lines.append(f"grown      {what}")
        if self.unchanged:
            lines.append(f"unchanged  {len(self.unchanged)} topic(s)")
        for diff in self.differences:
            lines.append(f"DIFFERS    {diff}")
        lines.append(
            "in sync with the catalog"
            if self.in_sync
            else f"{len(self.differences)} difference(s); apply changes nothing that exists beyond "
            "adding partitions when asked"
        )
        return "\n".join(lines) + "\n"


async def apply_topics(
    bootstrap: Bootstrap,
    catalog: TopicCatalog,
    *,
    replication_factor: int = 1,
    grow_partitions: bool = False,
    timeout_s: float = 30.0,
) -> ApplyReport:
    """Create the catalog's missing topics and compare the existing ones with it.

    Nothing is deleted or reconfigured; partitions are added to topics that
    have fewer than the catalog says only with `grow_partitions=True`.
    Returns once created topics have leaders, so a caller can use them at once.
    """
    if replication_factor < 1:
        raise ValueError("replication_factor must be at least 1")
    admin = AIOKafkaAdminClient(
        **client_kwargs(bootstrap),
        client_id="orchestrator-topics",
        request_timeout_ms=int(timeout_s * 1000),
    )
    await admin.start()
    try:
        return await _apply(admin, catalog.all_topics(), replication_factor, grow_partitions, timeout_s)
    finally:
        await admin.close()


async def _apply(
    admin: AIOKafkaAdminClient,
    specs: Sequence[TopicSpec],
    replication_factor: int,
    grow_partitions: bool,
    timeout_s: float,
) -> ApplyReport:
    report = ApplyReport()
    # Listing all topics (rather than asking for ours by name) matters: a metadata
    # request naming a missing topic makes a broker with auto-create on create it
    # with default settings.
    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    if missing:
        raced = await _create(admin, missing, replication_factor, report)
        await _wait_for_leaders(admin, report.created, timeout_s)
        existing |= raced
    present = [s for s in specs if s.name in existing]
    if not present:
        return report
    described = await _describe(admin, [s.name for s in present])
    configs = await _describe_configs(admin, [s.name for s in present])
    for spec in present:
        partitions = described.get(spec.name, [])
        diffs: list[str] = []
        grown = False
        have = len(partitions)
        if have < spec.partitions:
            if grow_partitions:
                await admin.create_partitions({spec.name: NewPartitions(spec.partitions)})
                report.grown.append(f"{spec.name}: {have} -> {spec.partitions} partitions")
                grown = True
            else:
                diffs.append(
                    f"{spec.name}: has {have} partitions, the catalog says {spec.partitions} "
                    "(grow with grow_partitions / --grow-partitions; keys produced afterwards may "
                    "move partition)"
                )
        elif have > spec.partitions:
            diffs.append(
                f"{spec.name}: has {have} partitions, the catalog says {spec.partitions} "
                "(Kafka cannot remove partitions: raise the catalog's count)"
            )
        replicas = {len(p.get("replicas", [])) for p in partitions}
        if replicas and replicas != {replication_factor}:
            diffs.append(
                f"{spec.name}: replication factor is {'/'.join(map(str, sorted(replicas)))}, "
                f"asked for {replication_factor} (apply does not change it)"
            )
        actual = configs.get(spec.name, {})
        for key, want in spec.kafka_config().items():
            got = actual.get(key)
            if got is None or _normalise_config(key, got) != _normalise_config(key, want):
                diffs.append(f"{spec.name}: {key} is {got!r}, the catalog says {want!r}")
        if diffs:
            report.differences.extend(diffs)
        elif spec.name not in report.created and not grown:
            report.unchanged.append(spec.name)
    return report


async def _create(
    admin: AIOKafkaAdminClient, missing: Sequence[TopicSpec], replication_factor: int, report: ApplyReport
) -> set[str]:
    """Create `missing`; returns the names another client created first (to be compared instead)."""
    response = await admin.create_topics(
        [NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.kafka_config()) for s in missing]
    )
    raced: set[str] = set()
    failures: list[str] = []
    for err in response.to_object()["topic_errors"]:
        name, code = err["topic"], err["error_code"]
        if code == 0:
            report.created.append(name)
        elif code == _TOPIC_ALREADY_EXISTS:
            raced.add(name)
        else:
            message = err.get("error_message") or for_code(code).__name__
            failures.append(f"{name}: {message}")
    if failures:
        done = f" (created before the failure: {', '.join(report.created)})" if report.created else ""
        raise TopicApplyError("Kafka refused to create topic(s): " + "; ".join(failures) + done)
    return raced


async def _describe(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Partitions of each existing topic in `names` (which must all exist)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for topic in await admin.describe_topics(list(names)):
        if topic["error_code"] == 0:
            out[topic["topic"]] = list(topic["partitions"])
    return out


async def _describe_configs(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
    out: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for res in response.to_object()["resources"]:
            if res["error_code"] != 0:
                raise TopicApplyError(
                    f"{res['resource_name']}: cannot read its configs: "
                    f"{res.get('error_message') or for_code(res['error_code']).__name__}"
                )
            # aiokafka names the entry's key `config_names` (sic).
            out[res["resource_name"]] = {
                e["config_names"]: e["config_value"]
                for e in res["config_entries"]
                if e["config_value"] is not None
            }
    return out


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: Iterable[str], timeout_s: float) -> None:
    """Wait until every partition of `names` has a leader: a topic is usable only then."""
    pending = set(names)
    deadline = time.monotonic() + timeout_s
    while pending:
        for topic in await admin.describe_topics(sorted(pending)):
            parts = topic["partitions"]
            if topic["error_code"] == 0 and parts and all(p["leader"] >= 0 for p in parts):
                pending.discard(topic["topic"])
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicApplyError(
                f"created but without leaders after {timeout_s:.0f}s: {', '.join(sorted(pending))}"
            )
        await asyncio.sleep(0.2)
