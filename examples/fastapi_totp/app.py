"""Password + TOTP login and an OIDC start/callback, in a FastAPI app that keeps no login
state in its own memory: pending logins, OIDC state, attempt counters and used codes all
live in Tessera, so any worker process can take any step.

    TESSERA_URL=http://127.0.0.1:8080 TESSERA_API_KEY=k1 uvicorn app:app --workers 3
    python app.py add-user alice < password.txt     # prints the TOTP secret and backup codes

Settings: TESSERA_URL (one URL, or several comma-separated: each process picks one, as a
load balancer would), TESSERA_API_KEY, APP_DB (the users' SQLite file, default users.db),
OIDC_AUTHORIZE_URL, OIDC_CLIENT_ID and OIDC_PROVIDER_ID (the identity provider).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from urllib.parse import urlencode

import pyotp
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel
from tessera_client import AsyncTessera, InvalidOrExpiredToken, StoreUnavailable

URLS = os.environ.get("TESSERA_URL", "http://127.0.0.1:8080").split(",")
DB = os.environ.get("APP_DB", "users.db")
OIDC_AUTHORIZE_URL = os.environ.get("OIDC_AUTHORIZE_URL", "https://idp.example.com/authorize")
OIDC_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "example-app")
OIDC_PROVIDER_ID = os.environ.get("OIDC_PROVIDER_ID", "example-idp")
CHALLENGE_COOKIE = "mfa_challenge"  # binds a pending login to the browser it began in
OIDC_COOKIE = "oidc_binding"  # binds an OIDC state to the browser that started it
LOGIN_TTL = 300

tessera = AsyncTessera(URLS[os.getpid() % len(URLS)], os.environ.get("TESSERA_API_KEY", "k1"))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await tessera.aclose()


app = FastAPI(title="Password + TOTP on Tessera", lifespan=lifespan)


@app.middleware("http")
async def worker_pid(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Every answer names the process that gave it."""
    response = await call_next(request)
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.exception_handler(StoreUnavailable)
async def tessera_unavailable(_: Request, e: StoreUnavailable) -> Response:
    """Without Tessera nothing is let through: 503, try again."""
    return JSONResponse(
        {"detail": "try again shortly"}, status_code=503, headers={"Retry-After": "1"}
    )


# -- users: a small SQLite file ------------------------------------------------------------


@contextmanager
def db() -> Iterator[sqlite3.Connection]:
    """A connection to the users' file, committed and closed at the end."""
    conn = sqlite3.connect(DB)
    try:
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS users (username TEXT PRIMARY KEY,"
                " password_hash TEXT NOT NULL, totp_secret TEXT NOT NULL)"
            )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS backup_codes (username TEXT NOT NULL,"
                " code_hash TEXT NOT NULL, used INTEGER NOT NULL DEFAULT 0)"
            )
            yield conn
    finally:
        conn.close()


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def secret_matches(stored: str, secret: str) -> bool:
    _, salt, digest = stored.split("$")
    got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1)
    return hmac.compare_digest(got.hex(), digest)


DUMMY_HASH = hash_secret("an unknown user takes as long as a known one")


def add_user(username: str, password: str) -> dict[str, object]:
    """Creates a user; answers the TOTP secret and the backup codes (shown once)."""
    totp_secret = pyotp.random_base32()
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(10)]
    with db() as conn:
        conn.execute(
            "INSERT INTO users VALUES (?, ?, ?)", (username, hash_secret(password), totp_secret)
        )
        conn.executemany(
            "INSERT INTO backup_codes (username, code_hash) VALUES (?, ?)",
            [(username, hash_secret(c)) for c in codes],
        )
    return {"username": username, "totp_secret": totp_secret, "backup_codes": codes}


def check_password(username: str, password: str) -> bool:
    with db() as conn:
        row = conn.execute(
            "SELECT password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
    matches = secret_matches(row[0] if row else DUMMY_HASH, password)
    return matches and row is not None


def totp_window(username: str, code: str) -> int | None:
    """The 30-second window (previous, current or next) whose code `code` is."""
    with db() as conn:
        (secret,) = conn.execute(
            "SELECT totp_secret FROM users WHERE username = ?", (username,)
        ).fetchone()
    now = int(time.time()) // 30
    totp = pyotp.TOTP(secret)
    return next(
        (w for w in (now - 1, now, now + 1) if hmac.compare_digest(totp.at(w * 30), code)), None
    )


def use_backup_code(username: str, code: str) -> bool:
    """Spends a matching unused backup code, atomically."""
    with db() as conn:
        rows = conn.execute(
            "SELECT rowid, code_hash FROM backup_codes WHERE username = ? AND used = 0", (username,)
        ).fetchall()
        for rowid, code_hash in rows:
            if secret_matches(code_hash, code.strip().lower()):
                spent = conn.execute(
                    "UPDATE backup_codes SET used = 1 WHERE rowid = ? AND used = 0", (rowid,)
                )
                return spent.rowcount == 1
    return False


# -- login ---------------------------------------------------------------------------------


class LoginBody(BaseModel):
    username: str
    password: str


class SecondFactorBody(BaseModel):
    mfa_token: str
    code: str | None = None
    backup_code: str | None = None


async def refuse_if_limited(event: str, key: str) -> None:
    """429 with Retry-After when `key` has used up `event`'s attempts (records nothing)."""
    decision = await tessera.peek_limit(event, key)
    if not decision.allowed:
        wait = str(max(1, math.ceil(decision.retry_after)))
        raise HTTPException(
            429, f"too many attempts; retry in {wait} s", headers={"Retry-After": wait}
        )


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/login")
async def login(body: LoginBody, request: Request, response: Response) -> dict[str, str]:
    """The password step: a pending login (a `pre_auth` token bound to a cookie)."""
    await refuse_if_limited("login_attempt", body.username)
    if not await asyncio.to_thread(check_password, body.username, body.password):
        await tessera.hit("login_attempt", body.username)
        raise HTTPException(401, "wrong username or password")
    challenge = secrets.token_urlsafe(32)
    pending = await tessera.issue_token(
        "pre_auth", username=body.username, challenge=challenge, ttl_seconds=LOGIN_TTL
    )
    response.set_cookie(
        CHALLENGE_COOKIE,
        challenge,
        max_age=LOGIN_TTL,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return {"mfa_token": pending.token}


@app.post("/2fa")
async def second_factor(
    body: SecondFactorBody, request: Request, response: Response
) -> dict[str, object]:
    """The code step. The pending login is only peeked at until the code is right, so a
    wrong code does not spend it; failures are counted per user (5 per 5 minutes) and
    checked before each attempt; a TOTP code is accepted once per user and window."""
    challenge = request.cookies.get(CHALLENGE_COOKIE)
    if not challenge:
        raise HTTPException(401, "sign in first")
    try:
        pending = await tessera.peek_token("pre_auth", body.mfa_token, challenge=challenge)
    except InvalidOrExpiredToken:
        raise HTTPException(401, "the login expired; sign in again") from None
    username = pending.username or ""
    await refuse_if_limited("2fa_attempt", username)

    if body.code is not None:
        window = await asyncio.to_thread(totp_window, username, body.code)
        ok = window is not None and await tessera.claim_once(f"{username}:{window}:{body.code}", 90)
    elif body.backup_code is not None:
        ok = await asyncio.to_thread(use_backup_code, username, body.backup_code)
    else:
        raise HTTPException(422, "send `code` or `backup_code`")
    if not ok:
        await tessera.hit("2fa_attempt", username)
        raise HTTPException(401, "wrong or already used code")

    try:  # another request may have completed this login meanwhile
        await tessera.consume_token("pre_auth", body.mfa_token, challenge=challenge)
    except InvalidOrExpiredToken:
        raise HTTPException(401, "the login expired; sign in again") from None
    await tessera.reset_limit("2fa_attempt", username)
    response.delete_cookie(CHALLENGE_COOKIE)
    # Here the app starts its own session for `username`.
    return {"authenticated": True, "username": username}


# -- OIDC ----------------------------------------------------------------------------------


@app.get("/oidc/start")
async def oidc_start(request: Request, return_to: str = "/") -> RedirectResponse:
    """Sends the browser to the identity provider with state, nonce and PKCE (S256); the
    nonce and the verifier wait in Tessera, under the state, for the callback."""
    verifier = secrets.token_urlsafe(48)
    nonce = secrets.token_urlsafe(24)
    binding = secrets.token_urlsafe(32)
    local = return_to.startswith("/") and not return_to.startswith("//") and "\\" not in return_to
    safe_return = return_to if local else "/"
    state = await tessera.issue_token(
        "oidc_state",
        provider_id=OIDC_PROVIDER_ID,
        nonce=nonce,
        code_verifier=verifier,
        challenge=binding,
        data={"return_to": safe_return},
        ttl_seconds=600,
    )
    s256 = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = urlencode(
        {
            "response_type": "code",
            "client_id": OIDC_CLIENT_ID,
            "scope": "openid email",
            "redirect_uri": str(request.url_for("oidc_callback")),
            "state": state.token,
            "nonce": nonce,
            "code_challenge": s256.decode(),
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"{OIDC_AUTHORIZE_URL}?{query}", status_code=302)
    response.set_cookie(OIDC_COOKIE, binding, max_age=600, httponly=True, samesite="lax")
    return response


@app.get("/oidc/callback")
async def oidc_callback(request: Request, state: str, code: str) -> dict[str, object]:
    """Consumes the state once, with the browser's binding cookie (no login CSRF)."""
    binding = request.cookies.get(OIDC_COOKIE)
    if not binding:
        raise HTTPException(400, "this browser did not start the sign-in")
    try:
        saved = await tessera.consume_token("oidc_state", state, challenge=binding)
    except InvalidOrExpiredToken:
        raise HTTPException(400, "unknown, expired or replayed state") from None
    if not (saved.nonce and saved.code_verifier):
        raise HTTPException(400, "the state carries no nonce or verifier")
    # A real app now posts `code` with `saved.code_verifier` to the provider's token
    # endpoint and accepts the ID token only if its `nonce` claim is `saved.nonce`.
    return {"provider_id": saved.provider_id, "return_to": saved.data["return_to"], "code": code}


if __name__ == "__main__":
    if sys.argv[1:2] != ["add-user"] or len(sys.argv) != 3:
        sys.exit("usage: python app.py add-user NAME < password")
    print(json.dumps(add_user(sys.argv[2], sys.stdin.readline().rstrip("\n"))))
