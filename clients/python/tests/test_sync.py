"""Every method of `Tessera` against three real workers, on PostgreSQL and on Redis."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import Deployment, sign_in, unique

from tessera_client import (
    Decision,
    InvalidOrExpiredToken,
    IssuedToken,
    Session,
    Tessera,
    TokenData,
    ValidationFailed,
)


def test_a_token_issued_on_one_worker_is_consumed_once_on_another(
    clients: list[Tessera],
) -> None:
    user = unique("alice")
    issued = clients[0].issue_token("pre_auth", username=user, challenge="cookie-1")
    assert isinstance(issued, IssuedToken)
    assert issued.kind == "pre_auth" and issued.token.startswith("tsr_pa_")
    now = datetime.now(timezone.utc)
    assert now < issued.expires_at < now + timedelta(hours=1)

    with pytest.raises(InvalidOrExpiredToken):
        clients[1].peek_token("pre_auth", issued.token, challenge="another")
    with pytest.raises(InvalidOrExpiredToken):
        clients[1].consume_token("pre_auth", issued.token)  # no challenge: not burnt
    peeked = clients[1].peek_token("pre_auth", issued.token, challenge="cookie-1")
    assert peeked.username == user

    got = clients[2].consume_token("pre_auth", issued.token, challenge="cookie-1")
    assert isinstance(got, TokenData)
    assert (got.kind, got.username, got.provider_id, got.nonce) == ("pre_auth", user, None, None)
    assert got.expires_at == issued.expires_at
    assert got.created_at <= got.expires_at
    for c in clients:
        with pytest.raises(InvalidOrExpiredToken) as e:
            c.consume_token("pre_auth", issued.token, challenge="cookie-1")
        assert (e.value.status, e.value.code) == (404, "invalid_or_expired_token")


@pytest.mark.parametrize("provider_id", [42, "google", "42"])
def test_provider_id_comes_back_in_the_type_given(
    clients: list[Tessera], provider_id: int | str
) -> None:
    issued = clients[0].issue_token(
        "oidc_state",
        provider_id=provider_id,
        nonce="n-0S6_WzA2Mj",
        code_verifier="v" * 43,
        data={"return_to": "/after"},
    )
    got = clients[2].consume_token("oidc_state", issued.token)
    assert got.provider_id == provider_id
    assert type(got.provider_id) is type(provider_id)
    assert (got.nonce, got.code_verifier, got.data) == (
        "n-0S6_WzA2Mj",
        "v" * 43,
        {"return_to": "/after"},
    )


def test_each_kind_carries_its_own_fields(clients: list[Tessera]) -> None:
    user = unique("bob")
    setup = clients[0].issue_token("email_otp_setup", username=user, code_hash="h$abc")
    got = clients[1].consume_token("email_otp_setup", setup.token)
    assert (got.username, got.code_hash) == (user, "h$abc")

    download = clients[0].issue_token("download", username=user, data={"file": [1, 2.5, None]})
    with pytest.raises(InvalidOrExpiredToken):
        clients[1].consume_token("password_reset", download.token)  # another kind
    assert clients[2].consume_token("download", download.token).data == {"file": [1, 2.5, None]}


def test_ttl_seconds_sets_the_lifetime(clients: list[Tessera]) -> None:
    issued = clients[0].issue_token("password_reset", username=unique("u"), ttl_seconds=90)
    now = datetime.now(timezone.utc)
    assert now + timedelta(seconds=80) < issued.expires_at < now + timedelta(seconds=100)


def test_revoke_removes_a_users_tokens_of_one_kind(clients: list[Tessera]) -> None:
    user = unique("carol")
    resets = [clients[i].issue_token("password_reset", username=user) for i in range(3)]
    other = clients[0].issue_token("oidc_exchange", username=user)
    assert clients[1].revoke_tokens("password_reset", user) == 3
    assert clients[2].revoke_tokens("password_reset", user) == 0
    for t in resets:
        with pytest.raises(InvalidOrExpiredToken):
            clients[0].consume_token("password_reset", t.token)
    assert clients[0].consume_token("oidc_exchange", other.token).username == user


def test_hit_until_denied_then_peek_and_reset(clients: list[Tessera]) -> None:
    key = unique("ip")
    decisions = [clients[i % 3].hit("py_test", key) for i in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after == 0 and d.window == 60 for d in decisions)

    denied = clients[1].hit("py_test", key)
    assert isinstance(denied, Decision)
    assert denied.allowed is False and denied.remaining == 0
    assert 0 < denied.retry_after <= 60
    assert 0 < denied.reset_after <= 60

    peeked = clients[2].peek_limit("py_test", key)
    assert (peeked.allowed, peeked.remaining, peeked.limit) == (False, 0, 5)
    assert clients[2].peek_limit("py_test", key).remaining == 0  # a peek records nothing

    assert clients[0].reset_limit("py_test", key) is None
    after = clients[1].peek_limit("py_test", key)
    assert (after.allowed, after.remaining, after.retry_after) == (True, 5, 0)


def test_hit_counts_its_cost(clients: list[Tessera]) -> None:
    key = unique("ip")
    assert clients[0].hit("py_test", key, cost=3).remaining == 2
    denied = clients[1].hit("py_test", key, cost=3)
    assert not denied.allowed and denied.retry_after > 0
    assert clients[2].hit("py_test", key, cost=2).remaining == 0


def test_claim_once_holds_across_workers(clients: list[Tessera]) -> None:
    key = f"{unique('dave')}:59373360:123456"
    assert clients[0].claim_once(key, 90) is True
    assert clients[2].claim_once(key, 90) is False
    assert clients[1].claim_once(key, 90) is False
    assert clients[1].claim_once(key + "7", 90) is True


def test_introspect_session(deployment: Deployment, clients: list[Tessera]) -> None:
    username, cookie = sign_in(deployment.urls[0])
    session = clients[2].introspect_session(cookie)
    assert isinstance(session, Session)
    assert (session.username, session.email) == (username, f"{username}@example.com")
    assert session.second_factor is False
    assert session.session_id and session.session_id not in cookie
    assert session.created_at < session.expires_at
    assert clients[1].introspect_session(cookie + "x") is None
    assert clients[1].introspect_session("tsr_not_a_session") is None


def test_tokens_live_in_the_deployments_store(
    deployment: Deployment, clients: list[Tessera]
) -> None:
    before = deployment.stored_tokens()
    issued = clients[0].issue_token("password_reset", username=unique("u"))
    assert deployment.stored_tokens() > before
    clients[1].consume_token("password_reset", issued.token)


def test_the_client_is_a_context_manager(deployment: Deployment) -> None:
    with Tessera(deployment.urls[0], "python-client-test-key") as t:
        assert t.claim_once(unique("cm"), 5) is True


def test_an_apps_own_token_kind(clients: list[Tessera]) -> None:
    user = unique("erin")
    issued = clients[0].issue_token(
        "x_invite", username=user, challenge="c", data={"team": 7}, ttl_seconds=60
    )
    assert issued.kind == "x_invite" and issued.token.startswith("tsr_x_")
    with pytest.raises(InvalidOrExpiredToken):
        clients[1].consume_token("x_export", issued.token, challenge="c")
    assert clients[1].revoke_tokens("x_export", user) == 0
    got = clients[2].consume_token("x_invite", issued.token, challenge="c")
    assert (got.kind, got.username, got.data) == ("x_invite", user, {"team": 7})
    with pytest.raises(ValidationFailed) as e:
        clients[0].issue_token("x_Invite")
    assert e.value.field == "kind"


def test_unconfigured_events_take_the_design_defaults(clients: list[Tessera]) -> None:
    # The seed's `2fa_attempt` keeps DESIGN's 5 per 5 minutes; an app's own event that no
    # one configured gets 10 per 15 minutes. Neither touches the counters `/auth` keeps.
    seed = clients[0].hit("2fa_attempt", unique("user"))
    assert (seed.limit, seed.remaining, seed.window) == (5, 4, 300)
    own = clients[1].hit("invite_sent", unique("user"))
    assert (own.limit, own.remaining, own.window) == (10, 9, 900)
