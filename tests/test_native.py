"""The compiled decision core (orchestrator/native.py): the same plans as the pure Python source, and
used only while it was built from that very source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator import native
from orchestrator.domain import sourcing
from tests.test_lookahead import priced_run, priced_scenarios
from tests.test_sourcing import pure_sourcing, run, scenarios

EXTENSION = native._extension_suffix()


def _compiled_or_skip() -> None:
    state = native.module_state("orchestrator.domain", "sourcing")
    if state != "compiled":
        pytest.skip(f"the compiled decision core is not in use here ({state})")


def test_the_module_imported_is_the_one_the_build_state_names() -> None:
    """Built and current: the extension is what `import` gives; otherwise the source is."""
    expected = "compiled" if native.module_state("orchestrator.domain", "sourcing") == "compiled" else "pure"
    assert native.loaded_state() == {"orchestrator.domain.sourcing": expected}
    assert str(sourcing.__file__).endswith(EXTENSION if expected == "compiled" else ".py")


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
    """A module's source and a build folder holding an extension stamped with that source."""
    source = tmp_path / "sourcing.py"
    source.write_text("def decide() -> int:\n    return 1\n")
    folder = tmp_path / "_native"
    folder.mkdir()
    (folder / f"sourcing{EXTENSION}").write_bytes(b"")
    (folder / "sourcing.sha256").write_text(native.source_digest(source) + "\n")
    return source, folder


def test_an_extension_built_from_the_source_is_used(tmp_path: Path) -> None:
    source, folder = _built(tmp_path)
    assert native.state_of(source, folder, env={}) == "compiled"


def test_an_edited_source_runs_as_written_not_as_last_built(tmp_path: Path) -> None:
    source, folder = _built(tmp_path)
    source.write_text("def decide() -> int:\n    return 2\n")
    assert native.state_of(source, folder, env={}).startswith("pure: the source changed since the build")


def test_no_extension_for_this_python_means_pure(tmp_path: Path) -> None:
    source, folder = _built(tmp_path)
    (folder / f"sourcing{EXTENSION}").unlink()
    assert native.state_of(source, folder, env={}).startswith("pure: not built for this Python")


def test_the_environment_can_ask_for_pure_python(tmp_path: Path) -> None:
    source, folder = _built(tmp_path)
    assert native.state_of(source, folder, env={native.PURE_ENV: "1"}) == f"pure: {native.PURE_ENV} is set"
    assert native.state_of(source, folder, env={native.PURE_ENV: "0"}) == "compiled"


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
