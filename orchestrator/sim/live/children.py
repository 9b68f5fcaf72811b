"""The child processes of a run (stages, simulators): start one with its log in a file, wait until it
answers, stop it. `make run` and the fault-injection run both drive their children with these."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 30.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode or 0


def die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the driver dies, however it dies
    (a closed terminal, SIGKILL), so no stage or simulator is left running on its own."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def log_file(log_dir: Path, name: str) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / f"{name}.log"


async def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log_path = log_file(log_dir, name)
    # Appends: a child started again (after a kill) continues the log of its earlier life.
    with open(log_path, "ab") as log:  # noqa: ASYNC230 - opening a local log file does not block
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator.cli",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Its own session: Ctrl-C reaches the driver only, which stops the children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return Child(name, process, log_path)


async def wait_file(child: Child, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):  # noqa: ASYNC240 - a stat of a local file
        if child.process.returncode is not None:
            raise ChildFailed(f"{child.name} exited with {child.process.returncode}:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise ChildFailed(f"{child.name} not listening after {timeout:.0f}s:\n{child.tail()}")
        await asyncio.sleep(0.2)


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            raise ChildFailed(
                f"something already listens on {host}:{port} (another `make run`?); "
                "stop it or pass --http-port"
            )


async def wait_ready(child: Child, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.process.returncode is not None:
                raise ChildFailed(f"{child.name} exited with {child.process.returncode}:\n{child.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.3)
    raise ChildFailed(f"{child.name} not ready after {timeout:.0f}s (see {child.log_path}):\n{child.tail()}")


__all__ = ["Child", "ChildFailed", "check_port_free", "spawn", "wait_file", "wait_ready"]
