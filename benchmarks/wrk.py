"""Closed-loop HTTP load from ``wrk``, a C load generator, so that the client costs little next to the servers.

One POST with a fixed JSON body and headers, ``concurrency`` keep-alive connections on one wrk thread for a
fixed time. A small Lua script sets the request and, when wrk is done, prints its summary as one JSON line
(wrk's own text rounds the percentiles); latencies are microseconds there and milliseconds here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARK = "WRK-JSON "
DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,'
    .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\\n',
    "{mark}", summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class Result:
    """One wrk run: what a table needs, plus every error wrk counts (``status_errors`` are non-2xx/3xx)."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: int
    error_kinds: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 2),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
        }


def available() -> str | None:
    """The wrk binary, or None (``make bench-gateway`` installs Debian's ``wrk``)."""
    return shutil.which("wrk")


def version() -> str:
    binary = available()
    if binary is None:
        return "missing"
    shown = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    text = (shown.stdout or shown.stderr).strip()
    return text.splitlines()[0].split(" Copyright")[0].strip() if text else "unknown"


def lua(body: dict[str, Any], headers: dict[str, str]) -> str:
    """The script: a fixed POST (JSON strings are valid Lua strings once quoted with json.dumps) and ``done``."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    return "\n".join(lines) + "\n" + DONE.replace("{mark}", MARK)


def run(
    url: str,
    script: str,
    *,
    concurrency: int,
    seconds: float,
    timeout_s: float = 10.0,
    during: Callable[[], None] | None = None,
) -> Result:
    """``wrk -t1 -c<concurrency>`` for ``seconds`` against ``url`` (the full request URL); ``during`` runs
    while wrk does (to sample the servers) and must return before ``seconds`` are up."""
    binary = available()
    if binary is None:
        raise RuntimeError("wrk is not installed: `make bench-gateway` installs it (apt package wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="limner-wrk-") as handle:
        handle.write(script)
        handle.flush()
        command = [binary, "-t1", f"-c{concurrency}", f"-d{seconds:g}s", f"--timeout={timeout_s:g}s"]
        process = subprocess.Popen(
            [*command, "-s", handle.name, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            if during is not None:
                during()
            stdout, stderr = process.communicate(timeout=seconds + 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stdout[-800:]} {stderr[-800:]}")
    return parse(json.loads(lines[-1][len(MARK) :]))


def parse(data: dict[str, Any]) -> Result:
    kinds = {name: int(data[name]) for name in ("connect_errors", "read_errors", "write_errors", "status_errors")}
    kinds["timeouts"] = int(data["timeouts"])
    return Result(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=round(data["mean_us"] / 1000, 3),
        max_ms=data["max_us"] / 1000,
        errors=sum(kinds.values()),
        error_kinds={name: count for name, count in kinds.items() if count},
    )
