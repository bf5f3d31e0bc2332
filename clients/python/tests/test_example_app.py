"""examples/fastapi_totp run as `uvicorn app:app --workers 3` against three Tessera
workers: each step of a login or an OIDC sign-in may land on another process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from conftest import API_KEY, REPO, Deployment, free_port, unique

EXAMPLE = REPO / "examples" / "fastapi_totp"
PASSWORD = "example-app-password"


@dataclass
class ExampleApp:
    url: str
    env: dict[str, str]

    def add_user(self) -> tuple[str, pyotp.TOTP]:
        """A new user of the app: (username, its TOTP generator)."""
        name = unique("user")
        out = subprocess.run(
            [sys.executable, "app.py", "add-user", name],
            input=PASSWORD + "\n",
            env=self.env,
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            check=True,
        )
        return name, pyotp.TOTP(json.loads(out.stdout)["totp_secret"])


@pytest.fixture(scope="module")
def example(deployment: Deployment, workdir: Path) -> Iterator[ExampleApp]:
    port = free_port()
    env = dict(
        os.environ,
        TESSERA_URL=",".join(deployment.urls),
        TESSERA_API_KEY=API_KEY,
        APP_DB=str(workdir / f"example-{deployment.name}-{port}.db"),
    )
    log = (workdir / f"uvicorn-{port}.log").open("wb")
    # Idle connections are kept for a minute, so that each stays with its process.
    uvicorn = ["uvicorn", "app:app", "--workers", "3", "--timeout-keep-alive", "60"]
    server = subprocess.Popen(
        [sys.executable, "-m", *uvicorn, "--port", str(port)],
        env=env,
        cwd=EXAMPLE,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    app = ExampleApp(f"http://127.0.0.1:{port}", env)
    try:
        wait_until_serving(app.url, server, log.name)
        yield app
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wait_until_serving(url: str, server: subprocess.Popen[bytes], log: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited: {Path(log).read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the example app did not start: {Path(log).read_text()}")


def pid(r: httpx.Response) -> int:
    return int(r.headers["x-worker-pid"])


@contextmanager
def connections_to_two_processes(url: str) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Two kept-alive connections that reach different app processes: new connections are
    opened until one lands on another process than the first."""
    with httpx.Client(base_url=url) as first:
        first_pid = pid(first.get("/healthz"))
        for _ in range(100):
            with httpx.Client(base_url=url) as other:
                if pid(other.get("/healthz")) != first_pid:
                    yield first, other
                    return
        pytest.fail("100 connections all reached one process")


@dataclass
class Login:
    """A pending login: what the password step answered, and the process that answered."""

    mfa_token: str
    challenge: str
    pid: int


def log_in(http: httpx.Client, username: str) -> Login:
    """The password step."""
    r = http.post("/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return Login(r.json()["mfa_token"], r.cookies["mfa_challenge"], pid(r))


def second_factor(http: httpx.Client, login: Login, code: str) -> httpx.Response:
    mfa_token, challenge = login.mfa_token, login.challenge
    return http.post(
        "/2fa",
        json={"mfa_token": mfa_token, "code": code},
        headers={"Cookie": f"mfa_challenge={challenge}"},
    )


def wrong_code(totp: pyotp.TOTP) -> str:
    valid = {totp.at(time.time() + offset) for offset in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def test_a_login_started_on_one_process_completes_on_another(example: ExampleApp) -> None:
    user, totp = example.add_user()
    with connections_to_two_processes(example.url) as (a, b):
        r = a.post("/login", json={"username": user, "password": "wrong"})
        assert r.status_code == 401
        login = log_in(a, user)

        wrong = second_factor(b, login, wrong_code(totp))
        assert wrong.status_code == 401  # a wrong code does not spend the login
        done = second_factor(b, login, totp.now())
        assert done.status_code == 200, done.text
        assert done.json() == {"authenticated": True, "username": user}
        assert pid(done) != login.pid

        again = second_factor(a, login, totp.now())
        assert again.status_code == 401  # the login was spent once


def test_a_replayed_totp_code_is_refused(example: ExampleApp) -> None:
    user, totp = example.add_user()
    code = totp.now()
    with httpx.Client(base_url=example.url) as http:
        first = second_factor(http, log_in(http, user), code)
        assert first.status_code == 200, first.text
        replay = second_factor(http, log_in(http, user), code)
        assert replay.status_code == 401
        assert "already used" in replay.json()["detail"]


def test_the_sixth_wrong_code_is_throttled(example: ExampleApp) -> None:
    user, totp = example.add_user()
    with httpx.Client(base_url=example.url) as http:
        login = log_in(http, user)
    for _ in range(5):
        with httpx.Client(base_url=example.url) as http:  # a new connection each time
            r = second_factor(http, login, wrong_code(totp))
            assert r.status_code == 401, r.text
    with httpx.Client(base_url=example.url) as http:
        r = second_factor(http, login, wrong_code(totp))
        assert r.status_code == 429, r.text
        assert 0 < int(r.headers["retry-after"]) <= 300
        assert second_factor(http, login, totp.now()).status_code == 429


def test_an_oidc_state_is_consumed_once_on_any_process(example: ExampleApp) -> None:
    with connections_to_two_processes(example.url) as (a, b):
        start = a.get("/oidc/start", params={"return_to": "/after"})
        assert start.status_code == 302
        location = urlsplit(start.headers["location"])
        query = {k: v[0] for k, v in parse_qs(location.query).items()}
        assert query["code_challenge_method"] == "S256"
        assert query["nonce"] and len(query["code_challenge"]) == 43
        binding = start.cookies["oidc_binding"]
        callback = {"state": query["state"], "code": "authorization-code"}

        assert b.get("/oidc/callback", params=callback).status_code == 400  # no cookie
        cookie = {"Cookie": f"oidc_binding={binding}"}
        r = b.get("/oidc/callback", params=callback, headers=cookie)
        assert r.status_code == 200, r.text
        assert r.json()["return_to"] == "/after"
        assert pid(r) != pid(start)
        assert a.get("/oidc/callback", params=callback, headers=cookie).status_code == 400
