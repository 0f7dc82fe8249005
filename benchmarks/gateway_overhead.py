"""Gateway overhead: limner in front of a provider that answers instantly, against calling that
provider directly, at several concurrencies, in one run.

Three processes, so that no server shares an interpreter (or a GIL) with the load: a fake AIGNE Hub
(``POST /api/images/generations`` answering a pre-encoded 64x64 PNG as ``b64_json`` at once), a
limner whose only model is an ``aigne`` upstream engine pointed at it (default settings otherwise:
accounting, metrics, media store, signed URLs), and this process as the client. The client is a
minimal keep-alive HTTP/1.1 client on asyncio streams, far cheaper per request than a full client
library, so that it is not what limits the direct measurement. Both targets get the same JSON body
through the same wire format (the AIGNE Hub dialect), so the difference is what limner adds:
parsing, accounting, the upstream call, decoding and re-encoding the image, storing it.

    python -m benchmarks.gateway_overhead [--requests 400] [--concurrency 1 16 64]

Prints a Markdown table and writes ``benchmarks/results/gateway_overhead.{md,json}``. Aim: under
2 ms added per request at p50, and at least 90% of the direct throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PATH = "/api/images/generations"
IMAGE_SIDE = 64


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (30, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def upstream_app() -> Any:
    """The instant provider: one pre-rendered answer, no work per request but reading the body."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answer = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(_png()).decode()}]}).encode()

    async def generations(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b'{"ok": true}', media_type="application/json")

    return Starlette(routes=[Route(PATH, generations, methods=["POST"]), Route("/health", health)])


def limner_app(upstream: str, data_dir: Path) -> Any:
    from limner.app import create_app
    from limner.engines.catalog import ModelEntry
    from limner.settings import Settings

    entry = ModelEntry(
        id="bench",
        engine="aigne",
        provider_url=upstream,
        upstream_model="dall-e-2",
        max_concurrency=256,
        max_queue=4096,
        max_retries=0,
    )
    return create_app(Settings(data_dir=data_dir, models=[entry], default_model="bench", embed_metadata=False))


def serve(role: str, port: int, upstream: str, data_dir: str) -> None:
    import uvicorn

    if role == "upstream":
        app = upstream_app()
    else:
        app = limner_app(upstream, Path(data_dir) / role)
        if role == "limner-open":  # accounting off: what the gateway path costs without it
            from limner.service.gate import OpenGate

            app.state.limner.service.gate = OpenGate()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")


class Connection:
    """One keep-alive HTTP/1.1 connection: send a prepared request, read one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def call(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def prepared(port: int, model: str) -> bytes:
    body = json.dumps(
        {
            "prompt": "a lighthouse",
            "model": model,
            "n": 1,
            "size": f"{IMAGE_SIDE}x{IMAGE_SIDE}",
            "response_format": "b64_json",
        }
    ).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Run:
    target: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    errors: int


async def load(target: str, port: int, model: str, concurrency: int, requests: int, warmup: int) -> Run:
    request = prepared(port, model)
    connections = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    remaining = warmup

    async def worker(connection: Connection, record: bool) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            status = await connection.call(request)
            if record:
                latencies.append(time.perf_counter() - started)
                errors += status != 200

    await asyncio.gather(*(worker(connection, False) for connection in connections))
    remaining = requests
    started = time.perf_counter()
    await asyncio.gather(*(worker(connection, True) for connection in connections))
    seconds = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    ms = sorted(latency * 1000 for latency in latencies)
    return Run(
        target,
        concurrency,
        len(ms),
        seconds,
        len(ms) / seconds,
        _pct(ms, 50),
        _pct(ms, 95),
        _pct(ms, 99),
        statistics.fmean(ms),
        errors,
    )


def _pct(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, round(pct / 100 * (len(values) - 1)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(role: str, port: int, upstream: str, data_dir: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.gateway_overhead",
        "--serve",
        role,
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--data-dir",
        data_dir,
    ]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{role} server exited with {process.returncode}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{role} server did not start")


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| concurrency | target | rps | throughput ratio | p50 ms | added p50 ms | p95 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        direct = row["direct"]
        for name, key in (
            ("direct", "direct"),
            ("limner", "limner"),
            ("limner, accounting off", "limner_without_accounting"),
        ):
            run = row[key]
            ratio = f"{run['rps'] / direct['rps']:.1%}" if key != "direct" else ""
            added = f"{run['p50_ms'] - direct['p50_ms']:.2f}" if key != "direct" else ""
            lines.append(
                f"| {row['concurrency']} | {name} | {run['rps']:.0f} | {ratio} | {run['p50_ms']:.2f} | {added} "
                f"| {run['p95_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} |"
            )
    return "\n".join(lines)


async def measure(args: argparse.Namespace, ports: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in args.concurrency:
        requests = max(args.requests, 10 * concurrency)
        warmup = max(20, 2 * concurrency)
        direct = await load("direct", ports["upstream"], "dall-e-2", concurrency, requests, warmup)
        via = await load("limner", ports["limner"], "bench", concurrency, requests, warmup)
        open_ = await load("limner-open", ports["limner-open"], "bench", concurrency, requests, warmup)
        rows.append(
            {
                "concurrency": concurrency,
                "direct": asdict(direct),
                "limner": asdict(via),
                "limner_without_accounting": asdict(open_),
                "added_p50_ms": via.p50_ms - direct.p50_ms,
                "throughput_ratio": via.rps / direct.rps,
                "added_p50_ms_without_accounting": open_.p50_ms - direct.p50_ms,
                "throughput_ratio_without_accounting": open_.rps / direct.rps,
            }
        )
        print(
            f"concurrency {concurrency}: direct {direct.rps:.0f} rps p50 {direct.p50_ms:.2f} ms; "
            f"limner {via.rps:.0f} rps p50 {via.p50_ms:.2f} ms; "
            f"without accounting {open_.rps:.0f} rps p50 {open_.p50_ms:.2f} ms",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="measured requests per target and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--serve", choices=["upstream", "limner", "limner-open"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.upstream, args.data_dir)
        return

    ports = {role: _free_port() for role in ("upstream", "limner", "limner-open")}
    upstream_url = f"http://127.0.0.1:{ports['upstream']}"
    with tempfile.TemporaryDirectory(prefix="limner-bench-") as data_dir:
        processes = [_start("upstream", ports["upstream"], "", data_dir)]
        try:
            for role in ("limner", "limner-open"):
                processes.append(_start(role, ports[role], upstream_url, data_dir))
            started = time.perf_counter()
            rows = asyncio.run(measure(args, ports))
            elapsed = time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=15)

    report = {
        "benchmark": "gateway_overhead",
        "image": f"{IMAGE_SIDE}x{IMAGE_SIDE} PNG, b64_json",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "seconds": elapsed,
        "rows": rows,
    }
    markdown = (
        f"# Gateway overhead\n\nlimner (AIGNE Hub dialect -> `aigne` upstream engine) in front of an instant fake "
        f"provider, against the provider directly; {IMAGE_SIDE}x{IMAGE_SIDE} PNG as `b64_json`, keep-alive "
        f"connections, one client connection per concurrent request. {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the end, {elapsed:.0f} s.\n\n{table(rows)}\n"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "gateway_overhead.md").write_text(markdown)
    print()
    print(markdown)


if __name__ == "__main__":
    main()
