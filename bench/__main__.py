"""`make bench`: run every benchmark in turn and print their tables.

    python -m bench                  # everything, full sizes
    python -m bench --quick          # small sizes: a smoke test, not a measurement
    python -m bench --only pipeline  # one benchmark; further arguments go to it
    python -m bench --only ceiling   # the pass-through ceiling alone (the pipeline run measures it too)

Each benchmark is a module `bench.<name>` with `main(argv) -> int` that prints
its own markdown table and writes bench-results/<name>.json.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from collections.abc import Callable, Sequence

#: What `make bench` runs, in order. The end-to-end run measures its own ceiling, in the same run.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("pipeline", "end to end on Kafka and PostgreSQL, with the pass-through ceiling, quality, memory"),
    ("decision", "speed of one decision, and its quality against the baselines"),
    ("promise", "the promise API: requests/s and latency on one core, inventory deltas/s into the ledgers"),
)
#: Run only when named with --only.
ON_REQUEST: tuple[tuple[str, str], ...] = (
    ("ceiling", "pass-through ceiling alone: a chain of no-work relay processes"),
)


def _load(name: str) -> Callable[[list[str] | None], int] | None:
    """The benchmark's `main`, or None when its module is not written yet."""
    module_name = f"bench.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the benchmark's own absence is a skip; a missing dependency inside it is a real error.
        if exc.name != module_name:
            raise
        return None
    main: Callable[[list[str] | None], int] = module.main
    return main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument(
        "--only", choices=[name for name, _ in (*BENCHMARKS, *ON_REQUEST)], help="run one benchmark"
    )
    args, rest = parser.parse_known_args(argv)
    if rest and not args.only:
        parser.error(f"arguments {' '.join(rest)} are passed to one benchmark only: add --only NAME")

    selected = (
        list(BENCHMARKS)
        if args.only is None
        else [(n, d) for n, d in (*BENCHMARKS, *ON_REQUEST) if n == args.only]
    )
    results: list[tuple[str, str]] = []
    for name, description in selected:
        print(f"\n=== bench.{name}: {description}\n", flush=True)
        run = _load(name)
        if run is None:
            print(f"bench.{name} does not exist yet; skipped", flush=True)
            results.append((name, "skipped (not written yet)"))
            continue
        started = time.monotonic()
        try:
            code = run([*(["--quick"] if args.quick else []), *rest])
        except Exception:
            # One broken benchmark should not hide the others' numbers.
            traceback.print_exc()
            code = 1
        seconds = time.monotonic() - started
        results.append((name, f"ok in {seconds:.0f} s" if code == 0 else f"FAILED (exit {code})"))

    print("\n=== summary\n")
    for name, outcome in results:
        print(f"  {name:<10} {outcome}")
    return 1 if any(o.startswith("FAILED") for _, o in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
