"""JSON Schema (2020-12) of every event type, generated from the payload models.

The models are the source of truth; `schemas/<event_type>.json` is what
integrators who do not use Python read. The schemas describe what the
orchestrator accepts (pydantic's validation mode): money is a decimal string
or a number, optional fields may be absent or null.

Output is deterministic (sorted keys, two-space indent, trailing newline) so
a test can compare the committed files byte for byte with a fresh render.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from orchestrator.contract.base import EventPayload
from orchestrator.contract.registry import EVENT_TYPES

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: A URN rather than a URL: the schemas are files in the repository, not
#: documents hosted anywhere, and a URL would promise a location.
SCHEMA_ID_PREFIX = "urn:order-orchestrator:schema:"


def default_schema_dir() -> Path:
    """`schemas/` at the root of the checkout."""
    return Path(__file__).resolve().parents[2] / "schemas"


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.json"


def schema_for(model: type[EventPayload]) -> dict[str, Any]:
    """The JSON Schema document of one payload model."""
    schema = model.model_json_schema(mode="validation")
    doc = inspect.cleandoc(model.__doc__ or "")
    key = (
        f"the `{model.subject_field}` field"
        if model.subject_field in model.model_fields
        else "derived from the fields as described above"
    )
    key_note = (
        f"Event type (CloudEvents `type`, header `ce_type`): `{model.event_type}`. "
        f"Kafka key and `ce_subject`: {key}."
    )
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = SCHEMA_ID_PREFIX + model.event_type
    schema["title"] = model.event_type
    schema["description"] = f"{doc}\n\n{key_note}" if doc else key_note
    return schema


def render_schema(model: type[EventPayload]) -> str:
    """The exact text of a schema file."""
    return json.dumps(schema_for(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_schemas() -> dict[str, str]:
    """File name -> file text, for every registered event type, in file-name order."""
    return {schema_file_name(name): render_schema(EVENT_TYPES[name]) for name in sorted(EVENT_TYPES)}


def export_schemas(out_dir: Path | None = None) -> list[Path]:
    """Write every schema into `out_dir` and delete schema files of types that no longer exist.

    Files whose text is already right are left alone (their modification time
    too). Returns the paths of all schema files now in `out_dir`, sorted.
    """
    target = out_dir if out_dir is not None else default_schema_dir()
    target.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in sorted(target.glob("*.json")):
        if stale.name not in rendered:
            stale.unlink()
    paths: list[Path] = []
    for name, text in rendered.items():
        path = target / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            # Write then rename so a reader never sees half a schema.
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        paths.append(path)
    return paths


def stale_schema_files(schema_dir: Path | None = None) -> list[str]:
    """Names of files in `schema_dir` that differ from, are missing from, or are not in a fresh render."""
    target = schema_dir if schema_dir is not None else default_schema_dir()
    rendered = render_schemas()
    on_disk = (
        {p.name: p.read_text(encoding="utf-8") for p in target.glob("*.json")} if target.is_dir() else {}
    )
    names = set(rendered) | set(on_disk)
    return sorted(n for n in names if rendered.get(n) != on_disk.get(n))
