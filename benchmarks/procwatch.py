"""What a server process costs and whom it talks to: CPU time from ``/proc/<pid>/stat``, and its network
connections, from a ``strace`` of every ``connect()`` and from the sockets it holds.

CPU time is ``utime + stime`` of the process and every process under it (all threads included), in
clock ticks; a benchmark reads it twice while load runs and divides by the requests served in between.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import time
from pathlib import Path

import psutil

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
CONNECT = re.compile(
    r'connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), .*?inet_(?:addr|pton)\(.*?"([^"]+)"'
)


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (a server that forks workers is charged for all of them)."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants so far, from ``/proc/<pid>/stat``."""
    ticks = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of proc(5)
    return ticks / TICKS_PER_SECOND


def settle(pids: list[int], *, quiet_s: float = 0.2, limit_s: float = 5.0) -> None:
    """Wait until these processes have used no CPU for ``quiet_s`` (requests still in flight when the load
    stopped are finished), so that the next measurement does not share the machine with them."""
    deadline = time.monotonic() + limit_s
    last = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now == last:
            return
        last = now


def remote_addresses(pid: int) -> set[str]:
    """Addresses at the far end of the sockets the process holds now, loopback excluded."""
    found: set[str] = set()
    for member in family(pid):
        try:
            connections = psutil.Process(member).net_connections(kind="inet")
        except psutil.Error:
            continue
        for connection in connections:
            if connection.raddr and not _loopback(connection.raddr.ip):
                found.add(f"{connection.raddr.ip}:{connection.raddr.port}")
    return found


def strace_prefix(log: Path) -> list[str] | None:
    """A command prefix that logs every ``connect()`` of the command and its children, at almost no cost
    (seccomp stops the process only on that call); None without strace."""
    binary = shutil.which("strace")
    if binary is None:
        return None
    return [binary, "-f", "--seccomp-bpf", "-qq", "-e", "trace=connect", "-e", "signal=none", "-o", str(log)]


def traced_connects(log: Path) -> tuple[int, set[str]]:
    """How many IP ``connect()`` calls the strace log holds, and the destinations that were not loopback."""
    total, outside = 0, set()
    for line in log.read_text(errors="replace").splitlines():
        match = CONNECT.search(line)
        if match is None:
            if "connect(" in line and "AF_INET" in line:
                outside.add(f"unparsed: {line.strip()[:160]}")
            continue
        total += 1
        port, address = match.groups()
        if not _loopback(address):
            outside.add(f"{address}:{port}")
    return total, outside


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
