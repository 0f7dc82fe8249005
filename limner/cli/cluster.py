"""``limner dev cluster``: the scale-out topology on one machine, all on loopback.

    PostgreSQL (accounts, ledgers) ─┐
    Redis (shared rate limits) ─────┼── API replica :8001 ─┐
    S3-compatible store (media) ────┤                       ├── Ray head ── Serve app limner-<model>
                                    └── API replica :8002 ─┘                 (the model's replicas)

Every piece is a private, throwaway instance in ``--dir`` (started by the same starters the tests use),
so it is a faithful small copy of a real deployment: stateless API replicas sharing one database, one
Redis, one bucket and one signing secret, with the model on Ray Serve. It prints where each piece is,
writes the same as JSON to ``--ready-file`` when asked, and stops everything on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from limner.cli.local_services import S3Server, free_port, postgres_server, redis_server, s3_server

dev_app = typer.Typer(help="Developer tools: run limner's scale-out topology on this machine.", no_args_is_help=True)

CATALOG = """\
[[models]]
id = "limner-emoji"
engine = "builtin"
runtime = "ray"
ray_address = "{ray_address}"
ray_actor_options = {{num_cpus = 1}}
aliases = ["dall-e-2", "dall-e-3", "gpt-image-1", "image-gen.pro-1.0", "text-to-image", "image-edit",
           "google/gemini-2.5-flash-image"]
"""


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _process(
    command: list[str], log: Path, env: dict[str, str] | None = None, stop: signal.Signals = signal.SIGTERM
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, stopped with ``stop`` (then SIGKILL after 30 s) however we leave."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, stop)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_for(what: str, ready: Any, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            _fail(f"{what} did not start (see {log}):\n{tail}")
        time.sleep(0.2)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _ray_head(stack: ExitStack, workdir: Path, cpus: int, auth: dict[str, str]) -> str:
    port = free_port()
    ray = Path(sys.executable).with_name("ray")
    env = {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(ray),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        f"--num-cpus={cpus}",
        "--node-ip-address=127.0.0.1",
    ]
    # Ray's sockets live under its temp dir, and a Unix socket path must stay under 108 bytes: keep it short.
    temp = Path(tempfile.mkdtemp(prefix="limner-ray-"))
    stack.callback(shutil.rmtree, temp, ignore_errors=True)
    command += ["--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]
    log = workdir / "ray.log"
    # SIGINT: ``ray start --block`` then stops the head's own daemons before it exits.
    process = stack.enter_context(_process(command, log, env, stop=signal.SIGINT))
    _wait_for("the Ray head", lambda: "Ray runtime started" in log.read_text(errors="replace"), process, log)
    return f"127.0.0.1:{port}"


def _replica(stack: ExitStack, workdir: Path, port: int, env: dict[str, str]) -> str:
    url = f"http://127.0.0.1:{port}"
    data_dir = workdir / f"replica-{port}"
    data_dir.mkdir(exist_ok=True)
    replica_env = {**os.environ, **env, "LIMNER_PORT": str(port), "LIMNER_DATA_DIR": str(data_dir)}
    log = workdir / f"replica-{port}.log"
    process = stack.enter_context(_process([sys.executable, "-m", "limner.cli", "serve"], log, replica_env))
    _wait_for(f"the API replica on port {port}", lambda: _healthy(url), process, log)
    return url


@dev_app.command()
def cluster(
    ports: Annotated[str, typer.Option(help="API replica ports, comma-separated")] = "8001,8002",
    directory: Annotated[Path, typer.Option("--dir", help="Where every piece keeps its files")] = Path(
        ".limner/cluster"
    ),
    ray_cpus: Annotated[int, typer.Option(help="CPUs the Ray head offers to model replicas")] = 1,
    ready_file: Annotated[Path | None, typer.Option(help="Write the summary as JSON here once all is up")] = None,
) -> None:
    """PostgreSQL, Redis, an S3-compatible store, a Ray head and API replicas, on loopback, until Ctrl-C."""
    replica_ports = [int(port) for port in ports.split(",") if port.strip()]
    workdir = directory.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind below: every piece is stopped
    with ExitStack() as stack:
        postgres = stack.enter_context(postgres_server())
        if isinstance(postgres, str):
            _fail(postgres)
            return
        redis_url = stack.enter_context(redis_server())
        if not redis_url.startswith("redis://"):
            _fail(redis_url)
        s3: S3Server = stack.enter_context(s3_server(authenticate=False))
        bucket = s3.new_bucket()
        ray_auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # this cluster's own token
        ray_address = _ray_head(stack, workdir, ray_cpus, ray_auth)
        config = workdir / "limner.toml"
        config.write_text(CATALOG.format(ray_address=ray_address))
        shared = {
            "LIMNER_CONFIG": str(config),
            "LIMNER_DATABASE_URL": postgres.new_database(),
            "LIMNER_REDIS_URL": redis_url,
            "LIMNER_MEDIA_STORE": "s3",
            "LIMNER_S3_BUCKET": bucket,
            "LIMNER_S3_ENDPOINT_URL": s3.endpoint_url,
            "LIMNER_S3_ACCESS_KEY_ID": s3.access_key_id,
            "LIMNER_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
            "LIMNER_S3_PATH_STYLE": "true",
            "LIMNER_SIGNING_SECRET": secrets.token_urlsafe(32),
            "RAY_USAGE_STATS_ENABLED": "0",
            **ray_auth,
        }
        replicas = [_replica(stack, workdir, port, shared) for port in replica_ports]
        summary = {
            "replicas": replicas,
            "database": f"postgresql://postgres@127.0.0.1:{postgres.port}",
            "redis": redis_url,
            "s3": f"{s3.endpoint_url}/{bucket}",
            "ray": ray_address,
            "directory": str(workdir),
        }
        for name, where in summary.items():
            typer.echo(f"{name:>10}: {', '.join(where) if isinstance(where, list) else where}")
        typer.echo("Ctrl-C stops everything.")
        if ready_file is not None:
            ready_file.write_text(json.dumps(summary))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            typer.echo("stopping")
