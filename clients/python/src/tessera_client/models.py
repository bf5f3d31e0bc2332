"""The typed answers of Tessera's ``/v1`` API, and how they are read from JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["Decision", "IssuedToken", "Session", "TokenData"]

_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")
_WINDOW = re.compile(r";\s*w=(\d+(?:\.\d+)?)")


def parse_time(value: Any) -> datetime:
    """An RFC 3339 timestamp as Tessera writes it (``2026-11-28T17:20:00.123456789Z``),
    as an aware datetime. Digits beyond microseconds are dropped (Python 3.10's
    ``fromisoformat`` reads neither ``Z`` nor nanoseconds)."""
    m = _TIME.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    base, fraction, zone = m.groups()
    at = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    return at.replace(microsecond=micros).astimezone(timezone.utc)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token. ``token`` is shown once: Tessera keeps only its hash."""

    token: str
    kind: str
    expires_at: datetime

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> IssuedToken:
        """Reads ``{token, kind, expires_at}``."""
        return cls(str(body["token"]), str(body["kind"]), parse_time(body["expires_at"]))


@dataclass(frozen=True)
class TokenData:
    """What a token carried: its kind's fields (``None`` for those it does not use).

    ``provider_id`` comes back in the type it was issued with (``int`` or ``str``);
    ``data`` is the JSON value it was issued with.
    """

    kind: str
    expires_at: datetime
    created_at: datetime
    username: str | None = None
    provider_id: int | str | None = None
    nonce: str | None = None
    code_verifier: str | None = None
    code_hash: str | None = None
    data: Any = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TokenData:
        """Reads a ``TokenRecord`` (absent fields are ``None``)."""
        provider = body.get("provider_id")
        if provider is not None and not isinstance(provider, (int, str)):
            raise ValueError(f"provider_id is neither an integer nor a string: {provider!r}")
        return cls(
            kind=str(body["kind"]),
            expires_at=parse_time(body["expires_at"]),
            created_at=parse_time(body["created_at"]),
            username=body.get("username"),
            provider_id=provider,
            nonce=body.get("nonce"),
            code_verifier=body.get("code_verifier"),
            code_hash=body.get("code_hash"),
            data=body.get("data"),
        )


@dataclass(frozen=True)
class Decision:
    """A rate-limit decision; durations in seconds.

    ``allowed``: the hit was admitted (for a peek: a hit of cost 1 would be now).
    ``remaining``: units still available. ``reset_after``: until the full limit is
    available again. ``retry_after``: until the same hit would be admitted (0 when it
    was). ``window``: the policy's window, from the ``RateLimit-Policy`` header, when sent.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    window: float | None = None

    @classmethod
    def from_answer(cls, body: Mapping[str, Any], headers: Mapping[str, str]) -> Decision:
        """Reads ``{allowed, limit, remaining, reset_after_ms, retry_after_ms}`` and the
        ``RateLimit-Policy`` and ``Retry-After`` headers."""
        if "retry_after_ms" in body:
            retry_after = int(body["retry_after_ms"]) / 1000
        else:
            header = headers.get("retry-after", "")
            retry_after = float(header) if header.isdigit() else 0.0
        policy = _WINDOW.search(headers.get("ratelimit-policy", ""))
        return cls(
            allowed=bool(body["allowed"]),
            limit=int(body["limit"]),
            remaining=int(body["remaining"]),
            reset_after=int(body["reset_after_ms"]) / 1000,
            retry_after=retry_after,
            window=float(policy.group(1)) if policy else None,
        )


@dataclass(frozen=True)
class Session:
    """A live Tessera session (``tessera_session`` cookie), as introspection describes it.

    ``session_id`` is its public id (never the cookie); ``second_factor`` says whether it
    was opened with a second factor.
    """

    username: str
    email: str | None
    session_id: str
    created_at: datetime
    expires_at: datetime
    second_factor: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Session | None:
        """Reads ``{active: true, username, ...}``; ``{active: false}`` is ``None``."""
        if body.get("active") is not True:
            return None
        return cls(
            username=str(body["username"]),
            email=body.get("email"),
            session_id=str(body["session_id"]),
            created_at=parse_time(body["created_at"]),
            expires_at=parse_time(body["expires_at"]),
            second_factor=bool(body["second_factor"]),
        )
