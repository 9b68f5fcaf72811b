"""The routing policy file: the packaged default, clear errors, and the environment override."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from orchestrator.contract.common import Channel, CustomerTier, NodeKind, ServiceLevel
from orchestrator.domain.policy import POLICY_FILE_ENV, Policy, PolicyError, load_policy

PACKAGED = Path(__file__).resolve().parents[1] / "orchestrator" / "policies" / "default.yaml"


@pytest.fixture(autouse=True)
def _no_policy_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_FILE_ENV, raising=False)


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_default_policy_loads() -> None:
    policy = load_policy()
    assert policy.version == "default-2"
    assert policy.max_shipments >= 1
    assert policy.backorder_policy == "ship_available"
    assert policy.handling_cost(NodeKind.STORE) > policy.handling_cost(NodeKind.DC)
    assert policy.min_service_level(CustomerTier.PLATINUM) is ServiceLevel.EXPRESS
    assert policy.min_service_level(CustomerTier.STANDARD) is None
    assert NodeKind.STORE in policy.excluded_kinds(Channel.MARKETPLACE)
    assert policy.excluded_kinds(Channel.WEB) == ()
    assert policy.ship_from_store.allows(Channel.WEB)
    assert not policy.ship_from_store.allows(Channel.MARKETPLACE)
    assert policy.holds.order_value_over == Decimal("5000.00")
    assert policy.exact_search_max_lines == 8


def test_the_packaged_file_sets_every_field() -> None:
    # The shipped file documents every knob: a field left out would be invisible to operators.
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    assert set(data) == set(Policy.model_fields)


def test_every_field_is_documented() -> None:
    for name, info in Policy.model_fields.items():
        assert info.description, f"Policy.{name} has no description"


def test_a_minimal_file_takes_the_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "version: tiny-1\n"))
    assert policy.version == "tiny-1"
    assert policy.split_cost == 4.0
    assert policy.ship_from_store.channels == "all"


def test_a_bad_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "version: v1\nsplit_cost: -1\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"policy {path}: split_cost: Input should be greater than or equal to 0"


def test_a_nested_bad_field_names_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "version: v1\nship_from_store:\n  enabled: maybe\n")
    with pytest.raises(PolicyError, match=r"ship_from_store\.enabled: Input should be a valid boolean"):
        load_policy(path)


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "version: v1\nsplit_costs: 3\n")
    with pytest.raises(PolicyError, match=r"split_costs: Extra inputs are not permitted"):
        load_policy(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("split_cost: 1\n", "version: Field required"),
        ("version: has space\n", "version: String should match pattern"),
        ("version: v\nmax_shipments: 0\n", "max_shipments: Input should be greater than or equal to 1"),
        ("version: v\nbackorder_policy: sometimes\n", "backorder_policy: Input should be 'ship_available'"),
        (
            "version: v\nranked_nodes: [DC-A, DC-A]\n",
            "ranked_nodes: Value error, ranked_nodes must not repeat: DC-A",
        ),
        ("version: v\nnode_kind_handling_cost: {warehouse: 1}\n", "node_kind_handling_cost.warehouse.[key]"),
        (
            "version: v\ntier_rules: {platinum: {min_service_level: warp}}\n",
            "tier_rules.platinum.min_service_level",
        ),
        ("- just\n- a list\n", "expected a mapping of fields at the top level"),
        ("version: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_are_explained(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"policy {path}: ")
    assert expected in str(info.value)


def test_a_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"policy .*nowhere\.yaml: cannot be read"):
        load_policy(tmp_path / "nowhere.yaml")


def test_the_environment_overrides_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "version: from-env-7\nsplit_cost: 9.5\n")
    monkeypatch.setenv(POLICY_FILE_ENV, str(path))
    policy = load_policy()
    assert policy.version == "from-env-7"
    assert policy.split_cost == 9.5
    # An explicit path still wins over the environment.
    assert load_policy(PACKAGED).version == "default-2"


def test_a_bad_file_named_by_the_environment_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "version: v\nlate_penalty_per_day: lots\n")
    monkeypatch.setenv(POLICY_FILE_ENV, str(path))
    with pytest.raises(
        PolicyError, match=rf"policy {path}: late_penalty_per_day: Input should be a valid number"
    ):
        load_policy()


def test_rank_bonuses_fall_linearly_down_the_list() -> None:
    policy = Policy(version="v", ranked_nodes=("DC-A", "DC-B", "DC-C", "DC-D"), rank_bonus=4.0)
    assert policy.rank_bonuses() == {"DC-A": 4.0, "DC-B": 3.0, "DC-C": 2.0, "DC-D": 1.0}
    assert Policy(version="v").rank_bonuses() == {}


def test_the_policy_is_immutable() -> None:
    policy = load_policy()
    with pytest.raises(ValueError, match="frozen"):
        policy.split_cost = 0.0  # type: ignore[misc]
