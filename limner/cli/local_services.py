"""Private PostgreSQL, Redis and S3-compatible servers on loopback ports, for ``limner dev cluster`` and the
tests (``tests.support`` uses these same starters).

Each starter installs its Debian package when the server binary is missing (``make setup`` normally
has), runs a throwaway instance in a temporary directory, and yields the reason instead when that is
impossible, so the caller can skip visibly. Only processes started here are ever stopped.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL after ten seconds: a server started here never outlives its user."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def apt_install(package: str) -> str | None:
    """Install a Debian package; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    if os.geteuid() != 0:
        return f"not root, so cannot apt-get install {package}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (
        ["apt-get", "install", "-y", "-qq", package],
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", package],
    ):
        try:
            done = subprocess.run(attempt, env=env, capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(attempt)} failed: {exc}"
        if done.returncode == 0 and attempt[1] == "install":
            return None
    return f"apt-get install {package} failed: {done.stderr.decode(errors='replace')[-300:]}"


# --- PostgreSQL -------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


@dataclass
class Postgres:
    port: int
    datadir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def postgres_server() -> Iterator[Postgres | str]:
    """A private PostgreSQL cluster (trust auth, fsync off) for the duration; or the reason there is none."""
    bindir = _pg_bindir()
    if bindir is None:
        reason = apt_install("postgresql")
        bindir = _pg_bindir()
        if bindir is None:
            yield f"PostgreSQL is not installed and could not be installed ({reason})"
            return
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's postgres user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            yield "running as root and there is no 'postgres' user to run PostgreSQL as"
            return
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="limner-pg-"))
    datadir = root / "data"
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    log = root / "server.log"

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([*as_user, *args], capture_output=True, timeout=timeout, check=False)

    init = run(str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        yield f"initdb failed: {init.stderr.decode(errors='replace')[-300:]}"
        return
    options = f"-p {port} -h 127.0.0.1 -k {root} -F -c max_connections=200"
    start = run(str(bindir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    if start.returncode != 0:
        detail = log.read_text(errors="replace")[-500:] if log.exists() else start.stderr.decode(errors="replace")
        shutil.rmtree(root, ignore_errors=True)
        yield f"PostgreSQL did not start: {detail}"
        return
    try:
        yield Postgres(port, datadir)
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(root, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    """A private Redis (no persistence) on a loopback port: its URL, or the reason there is none
    (a string not starting with ``redis://``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = apt_install("redis-server")
        binary = shutil.which("redis-server")
        if binary is None:
            yield f"redis-server is not installed and could not be installed ({reason})"
            return
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="limner-redis-"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                yield "redis-server did not start"
                return
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


# --- S3 (moto's server mode) ------------------------------------------------------------------------
#
# With ``authenticate`` (the default) requests are signed, checked against IAM, and refused with unknown
# credentials: the first three requests are allowed unauthenticated (moto's INITIAL_NO_AUTH_ACTION_COUNT)
# to create an IAM user, give it S3 rights and issue its access key, which callers then use like real
# ones. moto cannot check query-string (presigned) signatures while authentication is on, so presigned
# links need a server started with ``authenticate=False``.

BOOTSTRAP_ACTIONS = 3
S3_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def new_bucket(self) -> str:
        name = f"media-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def s3_server(*, authenticate: bool = True) -> Iterator[S3Server]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "INITIAL_NO_AUTH_ACTION_COUNT"}
    if authenticate:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(BOOTSTRAP_ACTIONS)
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the S3-compatible server did not start (status {process.poll()})")
            time.sleep(0.05)
        import boto3

        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="boot",
            aws_secret_access_key="boot",
        )
        iam.create_user(UserName="limner")
        iam.put_user_policy(UserName="limner", PolicyName="s3", PolicyDocument=json.dumps(S3_POLICY))
        key = iam.create_access_key(UserName="limner")["AccessKey"]
        iam.close()
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        stop(process)
