"""What /proc says about the benchmark's processes: where the machine's CPU went during a phase,
per group of processes (the broker, its JIT compiler apart, PostgreSQL, each stage, the
simulators, the benchmark), read before and after; and a process's peak RSS.

Linux only; elsewhere the snapshot is empty and the table says nothing was measured.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: The broker's group, and that of its JIT compiler threads, which a young JVM keeps busy for minutes.
BROKER = "Kafka broker"
BROKER_JIT = "Kafka broker: JIT compiler"
_JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


#: pid (or a broker JIT thread's id) -> (group, CPU seconds used so far)
Snapshot = dict[int, tuple[str, float]]


def group_of(cmdline: list[str], own_pid: int, pid: int) -> str | None:
    """The group a process belongs to, or None for processes that are not part of the run."""
    if pid == own_pid:
        return "benchmark (OMS, reader)"
    if not cmdline:
        return None
    joined = " ".join(cmdline)
    if "kafka.Kafka" in joined:
        return BROKER
    if Path(cmdline[0]).name.startswith("postgres") or joined.startswith("postgres:"):
        return "PostgreSQL"
    if "orchestrator" in joined:
        words = [Path(w).name for w in cmdline]
        if "promise" in words and "serve" in words:
            return "promise API"
        for verb in ("run", "sim"):
            if verb in words:
                i = words.index(verb)
                if i + 1 < len(words):
                    return f"{'stage' if verb == 'run' else 'sim'} {words[i + 1]}"
    return None


def snapshot() -> Snapshot:
    own = os.getpid()
    out: Snapshot = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            cmdline = [p for p in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if p]
            group = group_of(cmdline, own, pid)
            if group is None:
                continue
            # Fields after the command name (which may hold spaces) start after the last ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            utime, stime = int(fields[11]), int(fields[12])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        total = (utime + stime) / _TICKS
        if group == BROKER:
            total -= _jit_threads(entry, out)
        out[pid] = (group, total)
    return out


def _jit_threads(process: Path, out: Snapshot) -> float:
    """Put the process's JIT compiler threads in `out` (keyed by thread id) as BROKER_JIT; returns
    their CPU seconds. A compiler thread that ends between two snapshots leaves its time in the
    process's total, so it then counts as the broker's: the JVM retires idle ones, rarely."""
    jit = 0.0
    try:
        tasks = list((process / "task").iterdir())
    except OSError:
        return 0.0
    for task in tasks:
        try:
            if (task / "comm").read_text().strip() not in _JIT_THREADS:
                continue
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        except (OSError, IndexError, ValueError):
            continue
        out[int(task.name)] = (BROKER_JIT, seconds)
        jit += seconds
    return jit


def used_between(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per group between two snapshots (a process born in between counts from zero)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (group, seconds) in after.items():
        earlier = before.get(pid)
        used[group] += seconds - (earlier[1] if earlier is not None and earlier[0] == group else 0.0)
    return dict(used)


def shares(used: Mapping[str, float], seconds: float, cpus: int) -> list[dict[str, float | str]]:
    """Rows for a table: group, CPU seconds, cores busy on average, share of the machine."""
    rows: list[dict[str, float | str]] = []
    for group, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        rows.append(
            {
                "group": group,
                "cpu_seconds": round(cpu, 1),
                "cores": round(cpu / seconds, 2) if seconds > 0 else 0.0,
                "share": round(cpu / (seconds * cpus), 3) if seconds > 0 else 0.0,
            }
        )
    return rows


def peak_rss_kib(pid: int) -> int | None:
    """The process's peak resident set (VmHWM), readable only while it runs."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None
