"""Every method of `AsyncTessera` against three real workers, on PostgreSQL and on Redis."""

from __future__ import annotations

import pytest
from conftest import API_KEY, Deployment, sign_in, unique

from tessera_client import AsyncTessera, InvalidOrExpiredToken, ValidationFailed


async def test_tokens(async_clients: list[AsyncTessera]) -> None:
    a, b, c = async_clients
    user = unique("erin")
    issued = await a.issue_token("pre_auth", username=user, challenge="c")
    assert issued.token.startswith("tsr_pa_")
    assert (await b.peek_token("pre_auth", issued.token, challenge="c")).username == user
    with pytest.raises(InvalidOrExpiredToken):
        await b.consume_token("pre_auth", issued.token, challenge="wrong")
    got = await c.consume_token("pre_auth", issued.token, challenge="c")
    assert (got.kind, got.username) == ("pre_auth", user)
    with pytest.raises(InvalidOrExpiredToken):
        await a.consume_token("pre_auth", issued.token, challenge="c")

    for provider_id in (7, "github"):
        state = await a.issue_token(
            "oidc_state", provider_id=provider_id, nonce="n", code_verifier="v" * 43
        )
        assert (await c.consume_token("oidc_state", state.token)).provider_id == provider_id

    await a.issue_token("password_reset", username=user)
    await b.issue_token("password_reset", username=user)
    assert await c.revoke_tokens("password_reset", user) == 2

    with pytest.raises(ValidationFailed) as e:
        await a.issue_token("pre_auth", username=user, code_verifier="v")
    assert e.value.field == "code_verifier"


async def test_limits_and_claims(async_clients: list[AsyncTessera]) -> None:
    a, b, c = async_clients
    key = unique("ip")
    for expected in (4, 3, 2, 1, 0):
        d = await a.hit("py_test", key)
        assert d.allowed and d.remaining == expected
    denied = await b.hit("py_test", key)
    assert not denied.allowed and denied.retry_after > 0 and denied.window == 60
    assert not (await c.peek_limit("py_test", key)).allowed
    await c.reset_limit("py_test", key)
    assert (await a.peek_limit("py_test", key)).remaining == 5

    claim = unique("frank") + ":1:000000"
    assert await a.claim_once(claim, 30) is True
    assert await c.claim_once(claim, 30) is False


async def test_introspect_session(deployment: Deployment) -> None:
    username, cookie = sign_in(deployment.urls[1])
    async with AsyncTessera(deployment.urls[2], API_KEY) as t:
        session = await t.introspect_session(cookie)
        assert session is not None and session.username == username
        assert await t.introspect_session("nothing") is None
