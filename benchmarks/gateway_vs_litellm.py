"""limner beside LiteLLM's proxy, as gateways in front of the same instant OpenAI Images provider.

Four targets, one process each on 127.0.0.1: the fake provider (``benchmarks/fake_openai.py``, a bare ASGI
app answering a 256x256 PNG as ``b64_json`` at once), called directly as the baseline; limner (``limner
serve``, default settings) with one ``engine = "openai"`` catalog entry pointing at it and accounting on
(two consumers with tokens from ``limner tokens create``, one of them metered after ``limner credits
grant``, so every request checks a token, writes a usage row and, for the metered one, reserves and commits
credits); the same limner started with ``--workers 2`` (not its default: shown for what a second process
buys on the same cores); and LiteLLM's proxy (its own virtual environment, default settings: no master key, no database)
routing ``dall-e-2`` to the same provider. Every target gets the same OpenAI Images request.

Load is wrk (one thread, keep-alive) at each concurrency, in short rounds that visit every target in turn,
the order rotating from round to round, so that a machine whose speed drifts treats all targets alike.
Each figure is the median over rounds; each ratio the median of the ratios paired within a round. CPU
per request is the server process's ``utime + stime`` (``/proc/<pid>/stat``) over the middle of each run,
divided by the requests served in that time. Before measuring, each gateway runs a little load under
``strace`` to show that it connects to nothing but loopback.

    python -m benchmarks.gateway_vs_litellm [--rounds 3] [--seconds 5] [--concurrency 1 16 64]

Writes ``benchmarks/results/gateway_vs_litellm.{md,json}``. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import tomlkit

from benchmarks import fake_openai, litellm_proxy, procwatch, wrk
from benchmarks.gateway_table import markdown, summarise
from benchmarks.harness import ROOT, Server, cpu_model, free_port, git_commit, start_server

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = fake_openai.MODEL
PROVIDER_KEY = "sk-bench-provider"
PRICE_PER_IMAGE = 0.02
GRANT = 10_000_000
BODY = {"model": MODEL, "prompt": "a lighthouse at dusk", "n": 1, "size": "256x256", "response_format": "b64_json"}
TARGETS = ("direct", "limner", "limner-metered", "limner-2w", "litellm")
SERVER_OF = {"limner-metered": "limner"}
"""The server a target calls, where it is not the target's own name (the metered consumer's requests go to
the same limner process as the unmetered one's)."""
TOKEN_OF = {"limner-2w": "limner"}
"""The consumer token a target sends, where it is not its own (``limner --workers 2`` serves the same one)."""


@dataclass
class Target:
    """One thing wrk calls: a URL, the headers it sends, and the process whose CPU time is charged for it."""

    name: str
    server: Server
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url + fake_openai.PATH


class Bench:
    """Starts and stops the processes of one run (the provider, limner and LiteLLM), in one temporary dir."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="limner-vs-litellm-")
        self.root = Path(self._dir.name)
        self.servers: list[Server] = []
        try:
            self.provider = self._start("provider", [sys.executable, "-m", "benchmarks.fake_openai"], _env())
            self.tokens = self._limner_accounts()
        except BaseException:
            self.close()
            raise

    def _start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        *,
        health: str = "/health",
        trace: bool = False,
        cwd: Path = ROOT,
    ) -> Server:
        port = free_port()
        prefix = procwatch.strace_prefix(self.root / f"{name}.strace") if trace else None
        argv = [*(prefix or []), *command, "--port", str(port)]
        server = start_server(name, argv, env, port, self.root / f"{name}.log", health=health, cwd=cwd)
        self.servers.append(server)
        return server

    @property
    def provider_url(self) -> str:
        return self.provider.url + "/v1"

    def _limner_env(self) -> dict[str, str]:
        home = self.root / "limner-home"  # not "limner": python -m run here would import that folder
        if not home.exists():
            home.mkdir()
            entry = {
                "id": MODEL,
                "engine": "openai",
                "provider_url": self.provider_url,
                "upstream_model": MODEL,
                "api_key_env": "BENCH_PROVIDER_KEY",
                "price_per_image": PRICE_PER_IMAGE,
            }
            # LiteLLM signs nothing: like for like, limner's Content Credentials are off here (their cost is the
            # ``sign`` stage of the local-model report).
            config = {"data_dir": str(home / "data"), "default_model": MODEL, "models": [entry], "c2pa": "off"}
            (home / "limner.toml").write_text(tomlkit.dumps(config))
        return _env() | {"LIMNER_CONFIG": str(home / "limner.toml"), "BENCH_PROVIDER_KEY": PROVIDER_KEY}

    def _limner_accounts(self) -> dict[str, str]:
        """A token for an unmetered consumer and one for a metered consumer with credits, made through the CLI."""
        tokens = {}
        for target, consumer in (("limner", "bench"), ("limner-metered", "bench-metered")):
            shown = self._cli("tokens", "create", "--consumer", consumer, "--label", "benchmark")
            tokens[target] = next(line for line in shown.splitlines() if line.startswith("lim_"))
        self._cli("credits", "grant", "bench-metered", str(GRANT), "--note", "benchmark")
        return tokens

    def accounting(self) -> dict[str, Any]:
        """What limner's ledger holds after the run (``limner usage``): requests recorded and credits charged
        per consumer, the proof that accounting was on."""
        recorded: dict[str, Any] = {}
        for line in self._cli("usage").splitlines()[1:]:
            try:
                consumer, _model, requests, failed, _images, _seconds, charged = line.split()
                recorded[consumer] = {"requests": int(requests), "failed": int(failed), "credits": charged}
            except ValueError:  # a layout this parser does not know: keep the line as it is
                recorded.setdefault("unparsed", []).append(line.strip())
        return recorded

    def _cli(self, *args: str) -> str:
        command = [sys.executable, "-m", "limner.cli", *args]
        shown = subprocess.run(command, cwd=self.root, env=self._limner_env(), capture_output=True, text=True)
        if shown.returncode != 0:
            raise RuntimeError(f"limner {' '.join(args[:2])} failed: {shown.stderr.strip()[-600:]}")
        return shown.stdout

    def limner(self, *, trace: bool = False, workers: int = 1) -> Server:
        command = [sys.executable, "-m", "limner.cli", "serve", "--host", "127.0.0.1"]
        name = "limner" if workers == 1 else f"limner-{workers}w"
        if workers > 1:
            command += ["--workers", str(workers)]
        return self._start(f"{name}-traced" if trace else name, command, self._limner_env(), trace=trace)

    def litellm(self, *, trace: bool = False) -> Server:
        config = litellm_proxy.write_config(
            self.root / "litellm.yaml", model=MODEL, provider_url=self.provider_url, api_key=PROVIDER_KEY
        )
        command = litellm_proxy.command(config)
        env = litellm_proxy.environment()
        name = "litellm-traced" if trace else "litellm"
        return self._start(name, command, env, health=litellm_proxy.HEALTH, trace=trace, cwd=self.root)

    def stop(self, server: Server) -> None:
        """Stop a server; under strace, stop the traced process itself (strace then exits with it)."""
        if server.name.endswith("-traced"):
            for child in psutil.Process(server.process.pid).children():
                with contextlib.suppress(psutil.Error):
                    child.terminate()
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        for server in list(self.servers):
            self.stop(server)
        self._dir.cleanup()


def _env() -> dict[str, str]:
    """Our environment without ``LIMNER_*`` (a user's settings must not change what is measured), offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIMNER_")}
    return env | {"HF_HUB_OFFLINE": "1", "NO_PROXY": "*"}


def check_answer(target: Target) -> dict[str, Any]:
    """One request through the target: it must answer 200 with a PNG of the requested size."""
    from PIL import Image

    response = httpx.post(target.url, json=BODY, headers=target.headers, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"{target.name} answered {response.status_code}: {response.text[:400]}")
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    image.load()
    if image.size != (256, 256):
        raise RuntimeError(f"{target.name} returned a {image.size} image, not 256x256")
    return {"status": response.status_code, "image": f"{image.format} {image.size[0]}x{image.size[1]}"}


def audit(bench: Bench, tokens: dict[str, str], seconds: float) -> dict[str, Any]:
    """Each gateway started under strace, one checked request and a little load at 16 connections: every
    ``connect()`` it made, by destination."""
    if procwatch.strace_prefix(Path("/dev/null")) is None:
        return {"skipped": "strace is not installed"}
    found: dict[str, Any] = {}
    for name, start in (("limner", bench.limner), ("litellm", bench.litellm)):
        server = start(trace=True)
        target = Target(name, server, _headers(name, tokens))
        check_answer(target)
        wrk.run(target.url, wrk.lua(BODY, target.headers), concurrency=16, seconds=seconds)
        bench.stop(server)
        total, outside = procwatch.traced_connects(bench.root / f"{server.name}.strace")
        found[name] = {"connects": total, "not_loopback": sorted(outside)}
        print(f"  {name}: {total} connect() calls, not to loopback: {sorted(outside) or 'none'}", flush=True)
    return found


def _headers(target: str, tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.get(TOKEN_OF.get(target, target), PROVIDER_KEY)}"}


def measure(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    """One wrk run, with the server's CPU time sampled from 1 s in to 0.5 s before the end."""
    pid = target.server.process.pid
    window: dict[str, float] = {}

    def sample() -> None:
        time.sleep(1.0)
        window["cpu0"], window["t0"] = procwatch.cpu_seconds(pid), time.perf_counter()
        time.sleep(max(0.5, seconds - 1.5))
        window["cpu1"], window["t1"] = procwatch.cpu_seconds(pid), time.perf_counter()

    result = wrk.run(target.url, wrk.lua(BODY, target.headers), concurrency=concurrency, seconds=seconds, during=sample)
    served = result.rps * (window["t1"] - window["t0"])
    cpu_ms = 1000 * (window["cpu1"] - window["cpu0"]) / served if served else None
    return result.summary() | {"cpu_ms_per_request": None if cpu_ms is None else round(cpu_ms, 3)}


def run_rounds(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    pids = [target.server.process.pid for target in targets]
    for round_index in range(args.rounds):
        for concurrency in args.concurrency:
            shift = (round_index + args.concurrency.index(concurrency)) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                procwatch.settle(pids)
                data = measure(target, concurrency, args.seconds)
                data |= {"round": round_index, "concurrency": concurrency, "target": target.name}
                data["load_average"] = round(os.getloadavg()[0], 2)
                runs.append(data)
                print(
                    f"  round {round_index + 1} c={concurrency:<3} {target.name:<15} {data['rps']:7.1f} req/s  "
                    f"p50 {data['p50_ms']:6.2f} ms  p99 {data['p99_ms']:7.2f} ms  "
                    f"cpu {data['cpu_ms_per_request'] or 0:5.2f} ms/req  errors {data['errors']}",
                    flush=True,
                )
    return runs


def describe(litellm_version: str) -> dict[str, Any]:
    """The machine and versions a reader needs to weigh the figures."""
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "limner_commit": git_commit(),
        "litellm": litellm_version,
        "wrk": wrk.version(),
        "load_average_before": [round(value, 2) for value in os.getloadavg()],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; every target runs once per round")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one wrk run (at least 3)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load per target before measuring")
    parser.add_argument("--litellm-version", default=litellm_proxy.VERSION, help="litellm[proxy] release to pin")
    parser.add_argument("--no-audit", action="store_true", help="skip the strace check of outbound connections")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.seconds < 3:
        parser.error("--seconds must be at least 3 (CPU time is sampled in the middle of each run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if wrk.available() is None:
        print("wrk is not installed: run `make bench-gateway` (installs Debian's wrk) or apt-get install wrk")
        return 2
    litellm_proxy.ensure(args.litellm_version)
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = describe(args.litellm_version)
    print(f"limner vs LiteLLM {args.litellm_version}: {machine['cpus']} CPUs ({machine['cpu_model']})", flush=True)
    started = time.perf_counter()
    bench = Bench()
    try:
        print("[audit] outbound connections under strace", flush=True)
        connections = {"skipped": "--no-audit"} if args.no_audit else audit(bench, bench.tokens, args.warmup)
        servers = {
            "direct": bench.provider,
            "limner": bench.limner(),
            "limner-2w": bench.limner(workers=2),
            "litellm": bench.litellm(),
        }
        targets = [Target(name, servers[SERVER_OF.get(name, name)], _headers(name, bench.tokens)) for name in TARGETS]
        checks = {target.name: check_answer(target) for target in targets}
        print("[warm-up]", flush=True)
        for target in targets:
            wrk.run(target.url, wrk.lua(BODY, target.headers), concurrency=16, seconds=args.warmup)
        print(f"[measure] {args.rounds} rounds x {args.seconds:g} s per target and concurrency", flush=True)
        runs = run_rounds(targets, args)
        outside = {name: sorted(procwatch.remote_addresses(server.process.pid)) for name, server in servers.items()}
        rss_mb = {name: round(server.rss() / 2**20, 1) for name, server in servers.items()}
        procwatch.settle([server.process.pid for server in servers.values()])
        recorded = bench.accounting()
    finally:
        bench.close()
    machine["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    report = {
        "benchmark": "gateway_vs_litellm",
        "command": "python -m benchmarks.gateway_vs_litellm" + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
        "started": started_at,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine,
        "conditions": {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "concurrency": args.concurrency,
            "warmup_seconds": args.warmup,
            "request": BODY,
            "limner_price_per_image": PRICE_PER_IMAGE,
            "checks": checks,
            "connections_audit": connections,
            "non_loopback_sockets_at_end": outside,
            "rss_mb_at_end": rss_mb,
            "limner_usage_after": recorded,
        },
        "summary": summarise(runs),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway_vs_litellm.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "gateway_vs_litellm.md").write_text(text)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
