"""Servers in subprocesses, their resident memory, and the machine they run on.

Every HTTP benchmark talks to a server in its own process, started the way a user starts it
(``python -m limner.cli serve`` with a ``limner.toml``), so that its RSS is the server's alone and
the load generator never shares its interpreter or GIL. Every process gets the same torch thread
count (``OMP_NUM_THREADS``), so a ratio compares like with like.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import tomlkit

from limner.config.defaults import BUILTIN_MODEL_ID, default_models
from limner.engines.catalog import ModelEntry

ROOT = Path(__file__).resolve().parent.parent
MB = 2**20
START_TIMEOUT_S = 180.0
"""A server that is not answering /health by then has failed (importing torch takes a few seconds)."""


def builtin_entry(*, window_ms: float, max_batch: int = 16, max_queue: int = 32) -> ModelEntry:
    """The built-in model as the default catalog has it, with the scheduler knobs a benchmark varies."""
    return default_models()[0].model_copy(
        update={"batch_window_ms": window_ms, "max_batch_images": max_batch, "max_queue": max_queue}
    )


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a child process: ours without ``LIMNER_*`` (a user's shell settings must not
    change what is measured), with torch's thread count pinned and the Hub unreachable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIMNER_")}
    env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RssMonitor:
    """Samples a process's resident set size in a background thread, for the peak and the trend."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-monitor", daemon=True)

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic() - started, self.process.memory_info().rss))
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def at(self, fraction: float) -> int:
        """RSS at this fraction of the watched time (0 start, 1 end)."""
        if not self.samples:
            return 0
        return self.samples[min(len(self.samples) - 1, int(fraction * (len(self.samples) - 1)))][1]


@dataclass
class Server:
    """One server process on 127.0.0.1; ``rss_idle`` is taken once it answers /health, before any request."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    rss_idle: int = 0
    rss_loaded: int = 0
    peak: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    @contextmanager
    def watch(self) -> Iterator[RssMonitor]:
        """Sample RSS while the block runs; the server's ``peak`` keeps the highest value seen."""
        with RssMonitor(self.process.pid) as monitor:
            yield monitor
        self.peak = max(self.peak, monitor.peak)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Servers:
    """Starts the servers a run needs, each once, and stops every one of them at the end."""

    def __init__(self, threads: int, request_timeout: float) -> None:
        self.threads = threads
        self.request_timeout = request_timeout
        self._dir = tempfile.TemporaryDirectory(prefix="limner-bench-")
        self.root = Path(self._dir.name)
        self.running: dict[str, Server] = {}

    def limner(self, name: str, entry: ModelEntry) -> Server:
        """A limner serving only ``entry``, default settings otherwise (accounting, media store, metadata)."""
        if name in self.running:
            return self.running[name]
        home = self.root / name
        home.mkdir(parents=True, exist_ok=True)
        config = {
            "data_dir": str(home / "data"),
            "default_model": BUILTIN_MODEL_ID,
            "log_level": "WARNING",
            "request_timeout": self.request_timeout,
            "models": [entry.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {"id": entry.id}],
        }
        (home / "limner.toml").write_text(tomlkit.dumps(config))
        env = thread_env(self.threads) | {"LIMNER_CONFIG": str(home / "limner.toml")}
        port = free_port()
        command = [sys.executable, "-m", "limner.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        return self._start(name, command, env, port)

    def naive(self, name: str = "naive") -> Server:
        """The baseline in ``benchmarks/naive_server.py``; it loads its pipeline before it answers."""
        if name in self.running:
            return self.running[name]
        port = free_port()
        command = [sys.executable, "-m", "benchmarks.naive_server", "--port", str(port)]
        return self._start(name, command, thread_env(self.threads), port)

    def _start(self, name: str, command: list[str], env: dict[str, str], port: int) -> Server:
        server = start_server(name, command, env, port, self.root / f"{name}.log")
        self.running[name] = server
        return server

    def close(self) -> None:
        for server in self.running.values():
            server.stop()
        self.running.clear()
        self._dir.cleanup()


def start_server(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    *,
    health: str = "/health",
    cwd: Path = ROOT,
) -> Server:
    """Start ``command`` (output to ``log_path``) and wait until ``health`` answers 200; stopped if it never does."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(name, process, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}{health}", timeout=1.0).status_code == 200:
                time.sleep(1.0)  # let startup garbage settle before the idle reading
                server.rss_idle = server.peak = server.rss()
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{name} server did not answer {health} within {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def describe_machine(threads: int) -> dict[str, Any]:
    """What a reader needs to weigh the numbers: device, torch threads, CPU, and how busy the machine was."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "device": f"cuda ({torch.cuda.get_device_name(0)})" if cuda else f"cpu ({cpu_model()})",
        "torch": torch.__version__,
        "torch_threads": threads,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "commit": git_commit(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        status = ["git", "status", "--porcelain", "--", "limner"]
        dirty = subprocess.run(status, cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes in limner/" if dirty.stdout.strip() else "")
