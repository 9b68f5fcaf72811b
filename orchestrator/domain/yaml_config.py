"""Loading a YAML file into a validated pydantic model, with errors that name the file and the field.

Routing policies and exception playbooks are data that operators edit: a
mistake must stop the process at start-up with a message a person can act on
(`policy /x/p.yaml: split_cost: Input should be greater than or equal to 0`).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def describe_errors(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)


def parse_yaml_model(model: type[M], text: str, *, source: str, what: str, error: type[ValueError]) -> M:
    """Validate YAML `text` into `model`; `what` and `source` open every error message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{what} {source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{what} {source}: expected a mapping of fields at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{what} {source}: {describe_errors(exc)}") from None


def load_yaml_model(
    model: type[M],
    path: Path | None,
    *,
    env_var: str,
    packaged: str,
    what: str,
    error: type[ValueError],
) -> M:
    """`path`, else the file `env_var` names, else `packaged` from `orchestrator/policies/`."""
    if path is None:
        from_env = os.environ.get(env_var)
        if not from_env:
            resource = resources.files("orchestrator.policies").joinpath(packaged)
            return parse_yaml_model(
                model, resource.read_text(encoding="utf-8"), source=str(resource), what=what, error=error
            )
        path = Path(from_env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{what} {path}: cannot be read: {exc.strerror or exc}") from None
    return parse_yaml_model(model, text, source=str(path), what=what, error=error)
