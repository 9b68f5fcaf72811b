"""PromQL checks shared by the tests of the operations files (Grafana, autoscaling).

Expressions are parsed by promtool (Prometheus' own parser, from Debian's prometheus package), and
every metric they name must be one the orchestrator exports: a renamed metric breaks a test here
rather than a dashboard panel or an autoscaler, silently.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from orchestrator.promise.service import PromiseMetrics
from orchestrator.runtime.metrics import RuntimeMetrics

PROMTOOL_HINT = (
    "run `make prometheus-tools` (or `.ci/install-prometheus`), which installs promtool from Debian's "
    "prometheus package"
)

# What a family of each type exports, as Prometheus names the series.
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")


def known_metric_names() -> frozenset[str]:
    """Every series name the stages' runtime and the promise service can export."""
    names: set[str] = set()
    for registry in (RuntimeMetrics().registry, PromiseMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


#: Labels Prometheus adds to every series it scrapes (namespace: the Kubernetes scrape job's).
TARGET_LABELS = frozenset({"job", "instance", "namespace"})


def known_metric_labels() -> dict[str, frozenset[str]]:
    """Every series name the stages' runtime and the promise service can export, with its labels."""
    out: dict[str, frozenset[str]] = {}
    for registry in (RuntimeMetrics().registry, PromiseMetrics().registry):
        # Labels are not in collect() until a series exists, so read them off the collectors.
        for name, collector in registry._names_to_collectors.items():
            labels = set(getattr(collector, "_labelnames", ()))
            if name.endswith("_bucket"):
                labels.add("le")
            out[name] = frozenset(labels)
    return {name: out[name] for name in known_metric_names()}


def label_names(expr: str) -> set[str]:
    """The labels a PromQL expression matches on or groups by."""
    text = _STRING.sub('""', expr)
    found = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        found.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        found.update(label.strip() for label in group.split(",") if label.strip())
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Label matchers, ranges, strings and grouping label lists are cut out first; of the identifiers
    left, those followed by `(` are functions or aggregations, and the rest are metric names.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    found = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        called = text[match.end() :].lstrip().startswith("(")
        if not called and name not in _KEYWORDS and name.lower() not in ("inf", "nan"):
            found.add(name)
    return found


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not on PATH: {PROMTOOL_HINT}")
    return path


def assert_promql_parses(expressions: Mapping[str, str], workdir: Path) -> None:
    """Fail, naming each bad one, unless promtool parses every expression.

    promtool parses PromQL only as part of a rules file, so each expression becomes a recording
    rule of a scratch file; the rule's position maps promtool's complaint back to its name.
    """
    names = list(expressions)
    rules = [{"record": f"check:expression_{i}", "expr": expressions[name]} for i, name in enumerate(names)]
    path = workdir / "expressions.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}, sort_keys=False))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        bad = [
            f"{name}: {expressions[name]}"
            for i, name in enumerate(names)
            if re.search(rf"\brule {i + 1}\b|check:expression_{i}\b", output)
        ]
        pytest.fail("promtool rejects PromQL:\n" + "\n".join(bad or names) + "\n\n" + output)
