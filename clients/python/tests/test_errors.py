"""Each error class, raised from a real answer (or a real absence of one)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    API_KEY,
    Database,
    Deployment,
    Redis,
    free_port,
    start_workers,
    unique,
)

from tessera_client import (
    AsyncTessera,
    InvalidOrExpiredToken,
    StoreUnavailable,
    Tessera,
    TesseraError,
    TesseraUnavailable,
    Unauthorized,
    ValidationFailed,
)


def test_a_wrong_api_key_is_unauthorized(deployment: Deployment) -> None:
    with Tessera(deployment.urls[0], "not-the-key") as t:
        with pytest.raises(Unauthorized) as e:
            t.hit("py_test", "k")
        assert (e.value.status, e.value.code) == (401, "unauthorized")
        assert "not valid" in e.value.detail


async def test_a_wrong_api_key_is_unauthorized_async(deployment: Deployment) -> None:
    async with AsyncTessera(deployment.urls[1], "k1") as t:
        with pytest.raises(Unauthorized):
            await t.peek_token("pre_auth", "tsr_pa_x")
    with pytest.raises(ValueError):
        AsyncTessera(deployment.urls[1], " ")


def test_a_field_the_kind_does_not_use_is_named(clients: list[Tessera]) -> None:
    with pytest.raises(ValidationFailed) as e:
        clients[0].issue_token("pre_auth", username="alice", nonce="n")
    assert (e.value.status, e.value.code, e.value.field) == (422, "validation_failed", "nonce")
    copy = pickle.loads(pickle.dumps(e.value))
    assert (type(copy), copy.field, copy.detail) == (ValidationFailed, "nonce", e.value.detail)

    with pytest.raises(ValidationFailed) as e:
        clients[1].issue_token("oidc_state", provider_id=1, nonce="n")
    assert e.value.field == "code_verifier"

    with pytest.raises(ValidationFailed) as e:
        clients[2].hit("py_test", "")
    assert e.value.field == "key"


def test_a_body_over_the_limit_is_refused(clients: list[Tessera]) -> None:
    with pytest.raises(ValidationFailed) as e:
        clients[0].issue_token("download", username="u", data="x" * 70_000)
    assert (e.value.status, e.value.code) == (413, "body_too_large")


def test_an_expired_token_is_invalid(clients: list[Tessera]) -> None:
    issued = clients[0].issue_token("password_reset", username=unique("u"), ttl_seconds=1)
    assert clients[1].peek_token("password_reset", issued.token).username
    time.sleep(2.1)
    with pytest.raises(InvalidOrExpiredToken):
        clients[2].consume_token("password_reset", issued.token)


def test_a_store_that_goes_down_is_store_unavailable(tessera_bin: Path, workdir: Path) -> None:
    dir = workdir / "outage"
    database = Database()
    redis = Redis(dir / "redis")
    workers = []
    try:
        workers = start_workers(tessera_bin, database, redis.url, dir, 1)
        with Tessera(workers[0].url, API_KEY, timeout=30) as t:
            assert t.hit("py_test", "k").allowed
            redis.stop()
            with pytest.raises(StoreUnavailable) as e:
                t.hit("py_test", "k")
            assert not isinstance(e.value, TesseraUnavailable)
            assert (e.value.status, e.value.code) == (503, "store_unavailable")
            with pytest.raises(StoreUnavailable):
                t.issue_token("pre_auth", username="alice")
    finally:
        for w in workers:
            w.stop()
        redis.stop()
        database.drop()


class CountingTransport(httpx.HTTPTransport):
    """httpx's transport, counting the requests it tries to send."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return super().handle_request(request)


def test_no_server_is_tessera_unavailable_and_only_safe_calls_retry() -> None:
    transport = CountingTransport()
    with Tessera(f"http://127.0.0.1:{free_port()}", API_KEY, transport=transport) as t:
        with pytest.raises(TesseraUnavailable) as e:
            t.peek_limit("py_test", "k")
        assert isinstance(e.value, StoreUnavailable)
        assert (e.value.status, e.value.code) == (0, "unavailable")
        assert transport.sent == 3  # two retries

        for call in (
            lambda: t.issue_token("pre_auth", username="a"),
            lambda: t.consume_token("pre_auth", "tsr_pa_x"),
            lambda: t.hit("py_test", "k"),
            lambda: t.claim_once("k", 5),
        ):
            transport.sent = 0
            with pytest.raises(TesseraUnavailable):
                call()
            assert transport.sent == 1  # never retried

        for call in (
            lambda: t.peek_token("pre_auth", "tsr_pa_x"),
            lambda: t.revoke_tokens("pre_auth", "a"),
            lambda: t.reset_limit("py_test", "k"),
            lambda: t.introspect_session("s"),
        ):
            transport.sent = 0
            with pytest.raises(TesseraUnavailable):
                call()
            assert transport.sent == 3


async def test_no_server_is_tessera_unavailable_async() -> None:
    async with AsyncTessera(f"http://127.0.0.1:{free_port()}", API_KEY, retries=0) as t:
        with pytest.raises(TesseraUnavailable):
            await t.consume_token("pre_auth", "tsr_pa_x")


def test_answers_that_are_not_problems_still_raise() -> None:
    """A proxy's HTML error page, a problem with a code this client does not know, and a
    success of the wrong shape each become a TesseraError."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/ratelimit/hit":
            return httpx.Response(502, text="<html>Bad Gateway</html>")
        if path == "/v1/tokens/consume":
            return httpx.Response(
                409,
                json={"status": 409, "code": "something_new", "detail": "d"},
                headers={"content-type": "application/problem+json"},
            )
        return httpx.Response(201, json={"unexpected": True})

    with Tessera("http://tessera", API_KEY, transport=httpx.MockTransport(answer)) as t:
        with pytest.raises(TesseraError) as e:
            t.hit("py_test", "k")
        assert (type(e.value), e.value.status, e.value.code) == (
            TesseraError,
            502,
            "unexpected_response",
        )
        with pytest.raises(TesseraError) as e:
            t.consume_token("pre_auth", "x")
        assert (type(e.value), e.value.code, e.value.detail) == (TesseraError, "something_new", "d")
        with pytest.raises(TesseraError) as e:
            t.issue_token("pre_auth", username="u")
        assert e.value.code == "unexpected_response"
