"""Real Tessera deployments for the tests: three `tessera serve` workers on a fresh
PostgreSQL database, and three on PostgreSQL with tokens and limits on a redis-server of
the run's own. Tests that take the `deployment` fixture run against both.

Needs PostgreSQL (`TESSERA_TEST_POSTGRES_URL`, default
postgres://postgres@127.0.0.1:5432/postgres, with `psql` on the PATH), `redis-server` on the
PATH, and the built worker (`TESSERA_BIN`, default target/debug/tessera).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tessera_client import AsyncTessera, Tessera

REPO = Path(__file__).resolve().parents[3]
API_KEY = "python-client-test-key"
SECRET_KEY = "python-client-tests-secret-key-shared-by-every-worker-0123456789"
POSTGRES_ADMIN = os.environ.get(
    "TESSERA_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
# `py_test` is the tests' own event; the login limits are raised because every request of
# a run comes from 127.0.0.1.
RATE_LIMITS = ",".join(
    [
        "py_test=5/1m",
        "login_ip=100000/1m",
        "login_user_ip=100000/1m",
        "login_attempt=100000/1m",
    ]
)


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A directory for the run: the worker binary's copy, logs, mail, Redis files."""
    with tempfile.TemporaryDirectory(prefix="tessera-py-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def tessera_bin(workdir: Path) -> Path:
    """A copy of the built worker, so that a rebuild during the run does not pull it away."""
    source = Path(os.environ.get("TESSERA_BIN", REPO / "target" / "debug" / "tessera"))
    deadline = time.monotonic() + 120
    while not source.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"no worker binary at {source}: run `cargo build` first")
        time.sleep(1)
    copy = workdir / "tessera"
    shutil.copy2(source, copy)
    return copy


def psql(sql: str) -> None:
    """Runs `sql` on the PostgreSQL admin database."""
    try:
        subprocess.run(
            ["psql", POSTGRES_ADMIN, "-qc", sql], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_ADMIN} is required ({e}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )


@dataclass
class Database:
    """A fresh PostgreSQL database, dropped by `drop`."""

    name: str = field(default_factory=lambda: f"tessera_py_{uuid.uuid4().hex}")

    def __post_init__(self) -> None:
        psql(f'CREATE DATABASE "{self.name}"')

    @property
    def url(self) -> str:
        return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + self.name

    def drop(self) -> None:
        psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Redis:
    """A redis-server of the run's own, on a free port."""

    def __init__(self, dir: Path) -> None:
        self.port = free_port()
        dir.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as e:
            pytest.fail(f"redis-server is required ({e}): apt-get install redis-server")
        wait_for_port(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the process for port {port} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"nothing listens on port {port} after {seconds} s")


def tessera_env(database_url: str, redis_url: str | None, dir: Path) -> dict[str, str]:
    """The environment of a worker: no inherited TESSERA_* setting, then the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        TESSERA_DATABASE_URL=database_url,
        TESSERA_SECRET_KEY=SECRET_KEY,
        TESSERA_API_KEYS=API_KEY,
        TESSERA_RATE_LIMITS=RATE_LIMITS,
        TESSERA_OUTBOX_DIR=str(dir / "outbox"),
        TESSERA_LOG="warn",
    )
    if redis_url:
        env["TESSERA_REDIS_URL"] = redis_url
    return env


class Worker:
    """A `tessera serve` process on a free port."""

    def __init__(self, bin: Path, env: dict[str, str], dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = dir / f"worker-{self.port}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(bin), "serve", "--bind", "127.0.0.1:0", "--port", str(self.port)],
                env=env,
                cwd=dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def wait_ready(self, seconds: float = 60) -> None:
        """Waits until `/readyz` answers 200; fails with the log if the worker exits."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tessera serve exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"tessera serve not ready after {seconds} s: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_workers(
    bin: Path, database: Database, redis_url: str | None, dir: Path, n: int
) -> list[Worker]:
    """Migrates `database`, then starts `n` workers on it and waits until all are ready."""
    dir.mkdir(parents=True, exist_ok=True)
    env = tessera_env(database.url, redis_url, dir)
    migrate = subprocess.run(
        [str(bin), "migrate"], env=env, cwd=dir, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        pytest.fail(f"tessera migrate failed: {migrate.stderr}")
    workers = [Worker(bin, env, dir) for _ in range(n)]
    for w in workers:
        w.wait_ready()
    return workers


@dataclass
class Deployment:
    """Workers of one deployment; `urls[i]` is worker i's base URL."""

    name: str
    workers: list[Worker]
    database: Database
    redis: Redis | None

    def stored_tokens(self) -> int:
        """How many tokens (and other keys) the deployment's store holds now."""
        if self.redis:
            out = subprocess.run(
                ["redis-cli", "-p", str(self.redis.port), "dbsize"],
                capture_output=True,
                text=True,
                check=True,
            )
        else:
            out = subprocess.run(
                ["psql", self.database.url, "-Atc", "SELECT count(*) FROM auth_ephemeral_tokens"],
                capture_output=True,
                text=True,
                check=True,
            )
        return int(out.stdout)

    @property
    def urls(self) -> list[str]:
        return [w.url for w in self.workers]

    # Generous timeouts: the races put 100 requests in flight on a machine that may be busy.
    def client(self, i: int = 0) -> Tessera:
        return Tessera(self.urls[i % len(self.urls)], API_KEY, timeout=30)

    def async_client(self, i: int = 0) -> AsyncTessera:
        return AsyncTessera(self.urls[i % len(self.urls)], API_KEY, timeout=30)


@pytest.fixture(scope="session", params=["postgres", "redis"])
def deployment(
    request: pytest.FixtureRequest, tessera_bin: Path, workdir: Path
) -> Iterator[Deployment]:
    """Three workers on one fresh PostgreSQL database; for `redis`, with tokens and rate
    limits on a redis-server of this run."""
    name: str = request.param
    dir = workdir / name
    database = Database()
    redis = Redis(dir / "redis") if name == "redis" else None
    workers: list[Worker] = []
    try:
        workers = start_workers(tessera_bin, database, redis.url if redis else None, dir, 3)
        yield Deployment(name, workers, database, redis)
    finally:
        for w in workers:
            w.stop()
        if redis:
            redis.stop()
        database.drop()


@pytest.fixture
def clients(deployment: Deployment) -> Iterator[list[Tessera]]:
    """One synchronous client per worker."""
    cs = [deployment.client(i) for i in range(len(deployment.urls))]
    yield cs
    for c in cs:
        c.close()


@pytest.fixture
async def async_clients(deployment: Deployment) -> AsyncIterator[list[AsyncTessera]]:
    """One asynchronous client per worker."""
    cs = [deployment.async_client(i) for i in range(len(deployment.urls))]
    yield cs
    for c in cs:
        await c.aclose()


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def sign_in(base_url: str, username: str | None = None) -> tuple[str, str]:
    """Registers an account through `/auth` and signs it in; answers (username, the
    `tessera_session` cookie's value)."""
    username = username or unique("py")
    password = "correct horse battery staple"
    with httpx.Client(base_url=base_url, timeout=30) as http:
        r = http.post(
            "/auth/register",
            json={"username": username, "email": f"{username}@example.com", "password": password},
        )
        assert r.status_code == 201, r.text
        r = http.post("/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        assert r.json()["authenticated"] is True
        cookie = r.cookies.get("tessera_session")
        assert cookie, r.headers
        return username, cookie
