"""The decision core compiled to C with mypyc, used only when it was built from the sources it replaces.

`decide` (orchestrator/domain/sourcing.py) is what decide-node, re-decides, repairs and every promise
quote spend their time in, and the great-circle distance (geo.py) what it calls for every node.
Compiled by mypyc from the same typed sources, a promise quote takes about 30% less time and a
decision with every node's verdict about 10% less, with the same results (tests/test_native.py
compares the two on random orders, and the distances bit for bit). The pure Python modules stay
the reference: they are what runs wherever no C compiler built the extensions, when
`ORCHESTRATOR_PURE_PYTHON=1`, and whenever the sources changed since the build.

The build (`python -m orchestrator.native build`, a step of `make setup`) writes the extension into
`orchestrator/_native/<package>/` with the SHA-256 of the package's sources it came from. A package
listed in `COMPILED` puts that folder first on its `__path__` (see `native_path`) only while the
sources still match: an edited `sourcing.py`, or any module it builds on, runs as written, not as
last built.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_ROOT = Path(__file__).resolve().parent
#: Where the extensions are written: one folder per package, beside the package's own modules.
NATIVE_ROOT = PACKAGE_ROOT / "_native"
#: The modules compiled, by package. Each must type-check under mypyc (no pydantic models defined in it).
COMPILED: Mapping[str, tuple[str, ...]] = {"orchestrator.domain": ("sourcing", "geo")}
PURE_ENV = "ORCHESTRATOR_PURE_PYTHON"
_STAMP_SUFFIX = ".sha256"


def compiled_modules() -> list[tuple[str, str]]:
    """(package, module) of every module `COMPILED` names."""
    return [(package, module) for package, modules in COMPILED.items() for module in modules]


def _relative(package: str) -> Path:
    """`orchestrator.domain` -> `domain`: the package's folder under the root package."""
    return Path(*package.split(".")[1:])


def source_file(package: str, module: str) -> Path:
    return PACKAGE_ROOT / _relative(package) / f"{module}.py"


def native_dir(package: str) -> Path:
    return NATIVE_ROOT / _relative(package)


def sources_digest(root: Path) -> str:
    """SHA-256 of every Python source under `root` (a package), by relative path and content.

    The whole package, not the compiled module alone: mypyc builds in what it learnt of the modules
    `sourcing.py` imports (their types become checks in the C code), so an edit to any of them makes
    the build stale too. Hashing the package's 1.3 MB costs about 5 ms at import.
    """
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if relative.parts[0] == NATIVE_ROOT.name:
            continue
        digest.update(relative.as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _extension_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or importlib.machinery.EXTENSION_SUFFIXES[0])


def module_state(package: str, module: str, env: Mapping[str, str] | None = None) -> str:
    """What runs of `package.module`: "compiled", or "pure: ..." with why."""
    return state_of(PACKAGE_ROOT, native_dir(package), module, env)


def state_of(root: Path, folder: Path, module: str, env: Mapping[str, str] | None = None) -> str:
    """What runs of `module`, whose extension, if built from the package at `root`, is in `folder`."""
    env = os.environ if env is None else env
    if env.get(PURE_ENV, "").strip() not in ("", "0"):
        return f"pure: {PURE_ENV} is set"
    if not (folder / f"{module}{_extension_suffix()}").exists():
        return "pure: not built for this Python (python -m orchestrator.native build)"
    stamp = folder / f"{module}{_STAMP_SUFFIX}"
    if not stamp.exists() or stamp.read_text().strip() != sources_digest(root):
        return "pure: the sources changed since the build (python -m orchestrator.native build)"
    return "compiled"


def native_path(package_path: Sequence[str], package: str) -> list[str]:
    """A package's `__path__`, with its compiled modules' folder first when every one is current."""
    modules = COMPILED.get(package, ())
    if modules and all(module_state(package, m) == "compiled" for m in modules):
        return [str(native_dir(package)), *package_path]
    return list(package_path)


def loaded_state() -> dict[str, str]:
    """What each compiled module is in this process: "compiled" or "pure" (imported as it came)."""
    out = {}
    for package, module in compiled_modules():
        name = f"{package}.{module}"
        loaded = sys.modules.get(name) or importlib.import_module(name)
        compiled = str(getattr(loaded, "__file__", "")).endswith(_extension_suffix())
        out[name] = "compiled" if compiled else "pure"
    return out


def decision_core() -> str:
    """What this process decides with: "compiled", or "pure: ..." with why (for logs and health)."""
    if loaded_state()["orchestrator.domain.sourcing"] == "compiled":
        return "compiled"
    why = module_state("orchestrator.domain", "sourcing")
    return why if why != "compiled" else "pure: imported before the build"


def pure_module(package: str, module: str) -> ModuleType:
    """The pure Python module, loaded apart from the one imported (for comparing the two)."""
    name = f"{package}._pure_{module}"
    spec = importlib.util.spec_from_file_location(name, source_file(package, module))
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up while they are made.
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def _replace(built: Path, target: Path) -> None:
    """Put `built` at `target` by renaming a copy over it: a process running the old extension keeps
    its file (copied over in place, the library it has mapped would change under it)."""
    staged = target.with_name(f".{target.name}.new")
    shutil.copy2(built, staged)
    os.replace(staged, target)


def build(say: bool = True) -> dict[str, str]:
    """Compile every module of `COMPILED` with mypyc; returns what each is now (see `module_state`).

    mypyc type-checks the whole package, so it runs on a copy of the sources (its build folder and the
    extensions it copies beside the sources stay out of the tree); the extension and the digest of the
    very sources it was built from are then moved into `_native/`.
    """
    with tempfile.TemporaryDirectory(prefix="orchestrator-native-") as tmp:
        work = Path(tmp)
        shutil.copytree(
            PACKAGE_ROOT, work / "orchestrator", ignore=shutil.ignore_patterns("_native", "__pycache__")
        )
        shutil.copy(PACKAGE_ROOT.parent / "pyproject.toml", work / "pyproject.toml")
        built_from = sources_digest(work / "orchestrator")
        targets = [
            (package, module, work / "orchestrator" / _relative(package) / f"{module}.py")
            for package, module in compiled_modules()
        ]
        # One mypyc run per module: each gets a library of its own beside it, where built together
        # they would share one named by a hash, imported from outside the package.
        for _, _, target in targets:
            command = [sys.executable, "-m", "mypyc", str(target.relative_to(work))]
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(
                    f"mypyc failed on {target.name} (exit {done.returncode}):\n"
                    f"{(done.stdout + done.stderr)[-4000:]}"
                )
        for package, module, copied in targets:
            folder = native_dir(package)
            folder.mkdir(parents=True, exist_ok=True)
            built = copied.parent
            for pattern in (f"{module}{_extension_suffix()}", f"{module}__mypyc*{_extension_suffix()}"):
                for extension in built.glob(pattern):
                    _replace(extension, folder / extension.name)
            # Last: until the stamp says so, the new extension is not taken for current.
            (folder / f"{module}{_STAMP_SUFFIX}").write_text(built_from + "\n")
    states = {f"{p}.{m}": module_state(p, m) for p, m in compiled_modules()}
    if say:
        _print_states(states)
    return states


def _print_states(states: Mapping[str, str]) -> None:
    for name, state in states.items():
        print(f"{name}: {state}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.native", description="Build or inspect the compiled decision core."
    )
    parser.add_argument("action", choices=("build", "status", "clean"))
    parser.add_argument(
        "--if-possible",
        action="store_true",
        help="build: without mypyc or a C compiler, say so and leave the pure Python modules (exit 0)",
    )
    args = parser.parse_args(argv)
    if args.action == "clean":
        shutil.rmtree(NATIVE_ROOT, ignore_errors=True)
        return 0
    if args.action == "status":
        _print_states({f"{p}.{m}": module_state(p, m) for p, m in compiled_modules()})
        return 0
    if args.if_possible and (shutil.which("cc") is None and shutil.which("gcc") is None):
        print("no C compiler found: nothing compiled", flush=True)
        return 0
    print(f"compiling {', '.join(f'{p}.{m}' for p, m in compiled_modules())} with mypyc", flush=True)
    try:
        build()
    except (RuntimeError, OSError) as exc:
        if args.if_possible:
            print(f"the decision core runs as pure Python: {exc}", flush=True)
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
