"""`bench.procfs`: the broker's JIT compiler threads are a group of their own, apart from the broker.

A fresh JVM compiles its hot paths for minutes; without this, that start-up cost read as the
broker's work on the deltas and the order path's transactions.
"""

from __future__ import annotations

from pathlib import Path

from bench import procfs


def _task(process: Path, tid: int, comm: str, utime: int, stime: int) -> None:
    task = process / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "comm").write_text(comm + "\n")
    # Fields after the command: state, then 10 more, then utime and stime (clock ticks).
    rest = ["S"] + ["0"] * 10 + [str(utime), str(stime)] + ["0"] * 8
    (task / "stat").write_text(f"{tid} ({comm}) " + " ".join(rest) + "\n")


def test_the_brokers_jit_threads_are_counted_apart(tmp_path: Path) -> None:
    process = tmp_path / "4000"
    _task(process, 4000, "java", 100, 0)
    _task(process, 4007, "C2 CompilerThre", 300, 20)
    _task(process, 4008, "C1 CompilerThre", 40, 0)
    _task(process, 4050, "data-plane-kafk", 500, 50)
    out: procfs.Snapshot = {}
    ticks = procfs._TICKS

    jit = procfs._jit_threads(process, out)

    assert jit == (320 + 40) / ticks
    assert out == {
        4007: (procfs.BROKER_JIT, 320 / ticks),
        4008: (procfs.BROKER_JIT, 40 / ticks),
    }


def test_a_process_without_threads_to_read_has_no_jit(tmp_path: Path) -> None:
    out: procfs.Snapshot = {}
    assert procfs._jit_threads(tmp_path / "gone", out) == 0.0
    assert out == {}


def test_jit_time_moves_from_the_broker_to_its_own_group() -> None:
    before: procfs.Snapshot = {10: (procfs.BROKER, 5.0), 11: (procfs.BROKER_JIT, 2.0)}
    after: procfs.Snapshot = {
        10: (procfs.BROKER, 6.0),
        11: (procfs.BROKER_JIT, 5.5),
        12: (procfs.BROKER_JIT, 0.5),
    }
    assert procfs.used_between(before, after) == {procfs.BROKER: 1.0, procfs.BROKER_JIT: 4.0}
