"""The compiled decision core (orchestrator/native.py): the same plans as the pure Python source, and
used only while it was built from that very source."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import native
from orchestrator.domain import geo, sourcing
from tests.test_lookahead import priced_run, priced_scenarios
from tests.test_sourcing import pure_sourcing, run, scenarios

EXTENSION = native._extension_suffix()


@functools.cache
def _sourcing_state() -> str:
    # Hashing the package's sources takes milliseconds; the property tests below ask thousands of times.
    return native.module_state("orchestrator.domain", "sourcing")


def _compiled_or_skip() -> None:
    state = _sourcing_state()
    if state != "compiled":
        pytest.skip(f"the compiled decision core is not in use here ({state})")


def test_the_modules_imported_are_the_ones_the_build_state_names() -> None:
    """Built and current: the extensions are what `import` gives; otherwise the sources are."""
    expected = "compiled" if native.module_state("orchestrator.domain", "sourcing") == "compiled" else "pure"
    assert native.loaded_state() == {
        "orchestrator.domain.sourcing": expected,
        "orchestrator.domain.geo": expected,
    }
    for module in (sourcing, geo):
        assert str(module.__file__).endswith(EXTENSION if expected == "compiled" else ".py")


_DEGREES = st.floats(min_value=-90, max_value=90, allow_nan=False)
_LONGITUDES = st.floats(min_value=-180, max_value=180, allow_nan=False)


@functools.cache
def _pure_geo() -> Any:
    return native.pure_module("orchestrator.domain", "geo")


@settings(max_examples=2000, deadline=None)
@given(_DEGREES, _LONGITUDES, _DEGREES, _LONGITUDES)
def test_the_compiled_distance_is_the_sources_to_the_last_bit(
    lat1: float, lon1: float, lat2: float, lon2: float
) -> None:
    """Plans compared with the pure sourcing module still measure with the compiled `geo`: its
    distances, which pick carriers' bands, must be the very floats the source gives."""
    _compiled_or_skip()
    assert geo.haversine_km(lat1, lon1, lat2, lon2) == _pure_geo().haversine_km(lat1, lon1, lat2, lon2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_the_compiled_decision_plans_as_the_source_does(scenario: dict[str, Any], heuristic: bool) -> None:
    _compiled_or_skip()
    compiled = run(scenario, heuristic=heuristic)
    pure = run(scenario, heuristic=heuristic, decide_with=pure_sourcing().decide)
    assert compiled.model_dump(mode="json") == pure.model_dump(mode="json")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(priced_scenarios())
def test_the_compiled_decision_prices_the_future_as_the_source_does(scenario: dict[str, Any]) -> None:
    _compiled_or_skip()
    compiled = priced_run(scenario)
    pure = priced_run(scenario, decide_with=pure_sourcing().decide)
    assert compiled.model_dump(mode="json") == pure.model_dump(mode="json")


def _built(tmp_path: Path) -> tuple[Path, Path]:
    """A package's sources and a build folder holding an extension stamped with those sources."""
    root = tmp_path / "orchestrator"
    (root / "domain").mkdir(parents=True)
    (root / "domain" / "sourcing.py").write_text("def decide() -> int:\n    return 1\n")
    (root / "domain" / "network.py").write_text("WEEK = 5\n")
    folder = root / "_native" / "domain"
    folder.mkdir(parents=True)
    (folder / f"sourcing{EXTENSION}").write_bytes(b"")
    (folder / "sourcing.sha256").write_text(native.sources_digest(root) + "\n")
    return root, folder


def test_an_extension_built_from_the_sources_is_used(tmp_path: Path) -> None:
    root, folder = _built(tmp_path)
    assert native.state_of(root, folder, "sourcing", env={}) == "compiled"


def test_an_edited_source_runs_as_written_not_as_last_built(tmp_path: Path) -> None:
    root, folder = _built(tmp_path)
    (root / "domain" / "sourcing.py").write_text("def decide() -> int:\n    return 2\n")
    assert native.state_of(root, folder, "sourcing", env={}).startswith("pure: the sources changed")


def test_an_edit_to_a_module_it_builds_on_makes_the_build_stale_too(tmp_path: Path) -> None:
    root, folder = _built(tmp_path)
    (root / "domain" / "network.py").write_text("WEEK = 6\n")
    assert native.state_of(root, folder, "sourcing", env={}).startswith("pure: the sources changed")
    # A module added counts as an edit; the build folder's own files do not.
    (root / "domain" / "network.py").write_text("WEEK = 5\n")
    (folder / "leftover.py").write_text("")
    assert native.state_of(root, folder, "sourcing", env={}) == "compiled"
    (root / "domain" / "calendars.py").write_text("")
    assert native.state_of(root, folder, "sourcing", env={}).startswith("pure: the sources changed")


def test_no_extension_for_this_python_means_pure(tmp_path: Path) -> None:
    root, folder = _built(tmp_path)
    (folder / f"sourcing{EXTENSION}").unlink()
    assert native.state_of(root, folder, "sourcing", env={}).startswith("pure: not built for this Python")


def test_the_environment_can_ask_for_pure_python(tmp_path: Path) -> None:
    root, folder = _built(tmp_path)
    asked = native.state_of(root, folder, "sourcing", env={native.PURE_ENV: "1"})
    assert asked == f"pure: {native.PURE_ENV} is set"
    assert native.state_of(root, folder, "sourcing", env={native.PURE_ENV: "0"}) == "compiled"


def test_a_package_path_gets_the_build_folder_first_only_when_current() -> None:
    state = native.module_state("orchestrator.domain", "sourcing")
    path = native.native_path(["/somewhere/orchestrator/domain"], "orchestrator.domain")
    if state == "compiled":
        assert path == [str(native.native_dir("orchestrator.domain")), "/somewhere/orchestrator/domain"]
    else:
        assert path == ["/somewhere/orchestrator/domain"]
    # A package with nothing compiled keeps its path as it is.
    assert native.native_path(["/x/orchestrator/contract"], "orchestrator.contract") == [
        "/x/orchestrator/contract"
    ]
