"""Client for Tessera's ``/v1`` API: single-use tokens, sliding-window rate limits,
set-if-absent claims and session introspection, shared by every worker of an app.

    from tessera_client import Tessera

    with Tessera("http://127.0.0.1:8080", "k1") as tessera:
        issued = tessera.issue_token("pre_auth", username="alice", challenge=cookie)
        pending = tessera.consume_token("pre_auth", issued.token, challenge=cookie)

The FastAPI and Flask helpers live in :mod:`tessera_client.fastapi` and
:mod:`tessera_client.flask` (extras ``fastapi`` and ``flask``).
"""

from .client import AsyncTessera, Tessera
from .errors import (
    InvalidOrExpiredToken,
    StoreUnavailable,
    TesseraError,
    TesseraUnavailable,
    Unauthorized,
    ValidationFailed,
)
from .models import Decision, IssuedToken, Session, TokenData

SESSION_COOKIE = "tessera_session"
"""The cookie that carries a Tessera session."""

__all__ = [
    "SESSION_COOKIE",
    "AsyncTessera",
    "Decision",
    "InvalidOrExpiredToken",
    "IssuedToken",
    "Session",
    "StoreUnavailable",
    "Tessera",
    "TesseraError",
    "TesseraUnavailable",
    "TokenData",
    "Unauthorized",
    "ValidationFailed",
]
