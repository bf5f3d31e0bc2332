"""The errors of the client: every refusal from Tessera, and Tessera being out of reach.

Tessera answers errors as RFC 7807 ``application/problem+json`` with a stable ``code``;
each such answer becomes a :class:`TesseraError`, or the subclass its code names.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "InvalidOrExpiredToken",
    "StoreUnavailable",
    "TesseraError",
    "TesseraUnavailable",
    "Unauthorized",
    "ValidationFailed",
]


class TesseraError(Exception):
    """A request Tessera refused or could not answer.

    ``status`` is the HTTP status (0 when no answer came), ``code`` the problem's stable
    code (``"unexpected_response"`` for an answer that is not a problem document),
    ``detail`` the explanation for a person and ``field`` the offending request field, when
    there is one.
    """

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with its own arguments (for process pools and task queues).
        return (type(self), (self.status, self.code, self.detail, self.field))


class InvalidOrExpiredToken(TesseraError):
    """404 ``invalid_or_expired_token``: unknown, expired, used, of another kind or bound
    to another challenge (Tessera does not say which)."""


class Unauthorized(TesseraError):
    """401 ``unauthorized``: the service key is missing or not one of ``TESSERA_API_KEYS``."""


class ValidationFailed(TesseraError):
    """The request body was refused: 422 ``validation_failed`` (``field`` names the first
    offending field), 400 ``malformed_json``, 413 ``body_too_large`` or 415
    ``unsupported_media_type``."""


class StoreUnavailable(TesseraError):
    """503 ``store_unavailable`` or ``timeout``: Tessera's store did not answer in time.
    Nothing is known to have happened; try again shortly."""


class TesseraUnavailable(StoreUnavailable):
    """Tessera itself could not be reached (connection refused, timeout): ``status`` 0,
    ``code`` ``"unavailable"``."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "unavailable", detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail,))


_BY_CODE: dict[str, type[TesseraError]] = {
    "invalid_or_expired_token": InvalidOrExpiredToken,
    "unauthorized": Unauthorized,
    "validation_failed": ValidationFailed,
    "malformed_json": ValidationFailed,
    "body_too_large": ValidationFailed,
    "unsupported_media_type": ValidationFailed,
    "store_unavailable": StoreUnavailable,
    "timeout": StoreUnavailable,
}


def error_from_response(response: httpx.Response) -> TesseraError:
    """The error an answer that is not the expected success stands for."""
    status = response.status_code
    body: Any = None
    if "json" in response.headers.get("content-type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        text = response.text.strip()[:200] or response.reason_phrase
        return TesseraError(status, "unexpected_response", f"HTTP {status}: {text}")
    code: str = body["code"]
    detail = body.get("detail")
    field = body.get("field")
    cls = _BY_CODE.get(code) or (Unauthorized if status == 401 else TesseraError)
    return cls(
        status,
        code,
        detail if isinstance(detail, str) else "",
        field if isinstance(field, str) else None,
    )
