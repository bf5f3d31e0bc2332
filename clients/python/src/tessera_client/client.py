"""``Tessera`` and ``AsyncTessera``: the ``/v1`` API as typed method calls.

Both clients build the same requests and read the same answers (:class:`_Call`); they
differ only in how a request is sent.

Retries: a request is sent again only when the connection could not be established
(``httpx.ConnectError``, ``httpx.ConnectTimeout``), so Tessera cannot have seen it, and only
for the calls that change nothing or the same thing when repeated: ``peek_token``,
``peek_limit``, ``revoke_tokens``, ``reset_limit`` and ``introspect_session``.
``issue_token``, ``consume_token``, ``hit`` and ``claim_once`` are sent once: a retry of
those could spend a token, count a hit twice or lose a claim the first attempt won.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from .errors import TesseraError, TesseraUnavailable, error_from_response
from .models import Decision, IssuedToken, Session, TokenData

__all__ = ["AsyncTessera", "Tessera"]

T = TypeVar("T")

_BACKOFF = 0.05
"""Seconds before the first retry; each further retry waits twice as long."""


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One ``/v1`` request: where it goes, its body, how its answer is read, and whether a
    connection failure may be retried."""

    path: str
    body: dict[str, Any]
    read: Callable[[httpx.Response], T]
    retry_safe: bool


def _fields(**fields: Any) -> dict[str, Any]:
    """The fields that are not ``None``: Tessera refuses a field a kind does not use."""
    return {k: v for k, v in fields.items() if v is not None}


def _json(response: httpx.Response, status: int) -> Any:
    """The JSON body of an answer with ``status``; any other answer raises its error."""
    if response.status_code != status:
        raise error_from_response(response)
    try:
        return response.json()
    except ValueError as e:
        raise TesseraError(status, "unexpected_response", f"not JSON: {e}") from e


def _reading(read: Callable[[httpx.Response], T]) -> Callable[[httpx.Response], T]:
    """``read``, with a success answer of the wrong shape raising ``unexpected_response``."""

    def checked(response: httpx.Response) -> T:
        try:
            return read(response)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TesseraError(
                response.status_code, "unexpected_response", f"unexpected answer: {e!r}"
            ) from e

    return checked


@_reading
def _read_issued(r: httpx.Response) -> IssuedToken:
    return IssuedToken.from_json(_json(r, 201))


@_reading
def _read_token(r: httpx.Response) -> TokenData:
    return TokenData.from_json(_json(r, 200))


@_reading
def _read_revoked(r: httpx.Response) -> int:
    return int(_json(r, 200)["revoked"])


@_reading
def _read_decision(r: httpx.Response) -> Decision:
    return Decision.from_answer(_json(r, 200), r.headers)


def _read_reset(r: httpx.Response) -> None:
    if r.status_code != 204:
        raise error_from_response(r)


@_reading
def _read_claim(r: httpx.Response) -> bool:
    if r.status_code == 409:
        err = error_from_response(r)
        if err.code == "already_claimed":
            return False
        raise err
    return bool(_json(r, 201)["claimed"])


@_reading
def _read_session(r: httpx.Response) -> Session | None:
    return Session.from_json(_json(r, 200))


class _Calls:
    """The request of each method, shared by both clients."""

    @staticmethod
    def issue_token(kind: str, **fields: Any) -> _Call[IssuedToken]:
        body = {"kind": kind, **_fields(**fields)}
        return _Call("/v1/tokens", body, _read_issued, retry_safe=False)

    @staticmethod
    def consume_token(kind: str, token: str, challenge: str | None) -> _Call[TokenData]:
        body = _fields(kind=kind, token=token, challenge=challenge)
        return _Call("/v1/tokens/consume", body, _read_token, retry_safe=False)

    @staticmethod
    def peek_token(kind: str, token: str, challenge: str | None) -> _Call[TokenData]:
        body = _fields(kind=kind, token=token, challenge=challenge)
        return _Call("/v1/tokens/peek", body, _read_token, retry_safe=True)

    @staticmethod
    def revoke_tokens(kind: str, username: str) -> _Call[int]:
        body = {"kind": kind, "username": username}
        return _Call("/v1/tokens/revoke", body, _read_revoked, retry_safe=True)

    @staticmethod
    def hit(event: str, key: str, cost: int) -> _Call[Decision]:
        body = {"event": event, "key": key, "cost": cost}
        return _Call("/v1/ratelimit/hit", body, _read_decision, retry_safe=False)

    @staticmethod
    def peek_limit(event: str, key: str) -> _Call[Decision]:
        body = {"event": event, "key": key}
        return _Call("/v1/ratelimit/peek", body, _read_decision, retry_safe=True)

    @staticmethod
    def reset_limit(event: str, key: str) -> _Call[None]:
        body = {"event": event, "key": key}
        return _Call("/v1/ratelimit/reset", body, _read_reset, retry_safe=True)

    @staticmethod
    def claim_once(key: str, ttl_seconds: int) -> _Call[bool]:
        body = {"key": key, "ttl_seconds": ttl_seconds}
        return _Call("/v1/once", body, _read_claim, retry_safe=False)

    @staticmethod
    def introspect_session(session: str) -> _Call[Session | None]:
        body = {"session": session}
        return _Call("/v1/sessions/introspect", body, _read_session, retry_safe=True)


def _attempts(call: _Call[Any], retries: int) -> int:
    return retries + 1 if call.retry_safe else 1


def _unavailable(call: _Call[Any], e: httpx.TransportError) -> TesseraUnavailable:
    return TesseraUnavailable(f"{call.path}: {type(e).__name__}: {e}")


def _headers(api_key: str) -> dict[str, str]:
    if not api_key.strip():
        raise ValueError("api_key is empty: pass one of Tessera's TESSERA_API_KEYS")
    return {"Authorization": f"Bearer {api_key}"}


class Tessera:
    """A synchronous client of Tessera's ``/v1`` API, on one reused ``httpx.Client``
    (thread-safe: share one per process).

    ``base_url`` is a worker or the load balancer in front of them, ``api_key`` one of
    ``TESSERA_API_KEYS``; ``timeout`` bounds each request in seconds; ``transport``
    replaces httpx's (for tests or connection limits). Every refusal raises a
    :class:`~tessera_client.TesseraError`; Tessera out of reach raises
    :class:`~tessera_client.TesseraUnavailable`.

    Retries: when the connection cannot be established (``httpx.ConnectError``,
    ``httpx.ConnectTimeout``: Tessera never saw the request), ``peek_token``,
    ``peek_limit``, ``revoke_tokens``, ``reset_limit`` and ``introspect_session`` are sent
    up to ``retries`` more times, 50 ms, then 100 ms, ... apart. ``issue_token``,
    ``consume_token``, ``hit`` and ``claim_once`` are never retried: a repeat could spend a
    token, count a hit twice or lose a claim. Any other failure (a read timeout, a dropped
    connection) is never retried.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._retries = retries
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Tessera:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempts = _attempts(call, self._retries)
        for attempt in range(attempts):
            try:
                response = self._http.post(call.path, json=call.body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt + 1 < attempts:
                    time.sleep(_BACKOFF * 2**attempt)
                    continue
                raise _unavailable(call, e) from e
            except httpx.TransportError as e:
                raise _unavailable(call, e) from e
            return call.read(response)
        raise AssertionError("unreachable")

    def issue_token(
        self,
        kind: str,
        *,
        username: str | None = None,
        provider_id: int | str | None = None,
        nonce: str | None = None,
        code_verifier: str | None = None,
        challenge: str | None = None,
        code_hash: str | None = None,
        data: Any = None,
        ttl_seconds: int | None = None,
    ) -> IssuedToken:
        """Issues a single-use token of ``kind`` carrying the given fields (exactly those
        the kind uses; a foreign one raises ``ValidationFailed`` naming it). With
        ``challenge``, consume and peek must present it. Never retried."""
        return self._run(
            _Calls.issue_token(
                kind,
                username=username,
                provider_id=provider_id,
                nonce=nonce,
                code_verifier=code_verifier,
                challenge=challenge,
                code_hash=code_hash,
                data=data,
                ttl_seconds=ttl_seconds,
            )
        )

    def consume_token(self, kind: str, token: str, *, challenge: str | None = None) -> TokenData:
        """Consumes ``token``: of any number of concurrent consumers on any workers, exactly
        one gets its data; the others (and any wrong kind, wrong challenge, expired or
        unknown token) raise ``InvalidOrExpiredToken``. A wrong challenge does not spend
        the token. Never retried."""
        return self._run(_Calls.consume_token(kind, token, challenge))

    def peek_token(self, kind: str, token: str, *, challenge: str | None = None) -> TokenData:
        """Reads ``token`` without consuming it; refusals as for :meth:`consume_token`."""
        return self._run(_Calls.peek_token(kind, token, challenge))

    def revoke_tokens(self, kind: str, username: str) -> int:
        """Removes every token of ``kind`` issued for ``username``; answers how many."""
        return self._run(_Calls.revoke_tokens(kind, username))

    def hit(self, event: str, key: str, cost: int = 1) -> Decision:
        """Checks and records ``cost`` units of ``event`` for ``key``, atomically across
        workers. A denial is a :class:`Decision` with ``allowed`` false. Never retried."""
        return self._run(_Calls.hit(event, key, cost))

    def peek_limit(self, event: str, key: str) -> Decision:
        """The state of ``key`` now, recording nothing."""
        return self._run(_Calls.peek_limit(event, key))

    def reset_limit(self, event: str, key: str) -> None:
        """Forgets the events of ``key``."""
        self._run(_Calls.reset_limit(event, key))

    def claim_once(self, key: str, ttl_seconds: int) -> bool:
        """Claims ``key`` for ``ttl_seconds``: ``True`` for the first claim, ``False`` while
        an earlier claim holds (a replay guard: ``f"{user}:{window}:{code}"``). Never
        retried."""
        return self._run(_Calls.claim_once(key, ttl_seconds))

    def introspect_session(self, session: str) -> Session | None:
        """The live session a ``tessera_session`` cookie value names, else ``None``."""
        return self._run(_Calls.introspect_session(session))


class AsyncTessera:
    """The asynchronous twin of :class:`Tessera`, on one reused ``httpx.AsyncClient``:
    the same methods, awaited, with the same errors and retry rules."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._retries = retries
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncTessera:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempts = _attempts(call, self._retries)
        for attempt in range(attempts):
            try:
                response = await self._http.post(call.path, json=call.body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt + 1 < attempts:
                    await asyncio.sleep(_BACKOFF * 2**attempt)
                    continue
                raise _unavailable(call, e) from e
            except httpx.TransportError as e:
                raise _unavailable(call, e) from e
            return call.read(response)
        raise AssertionError("unreachable")

    async def issue_token(
        self,
        kind: str,
        *,
        username: str | None = None,
        provider_id: int | str | None = None,
        nonce: str | None = None,
        code_verifier: str | None = None,
        challenge: str | None = None,
        code_hash: str | None = None,
        data: Any = None,
        ttl_seconds: int | None = None,
    ) -> IssuedToken:
        """See :meth:`Tessera.issue_token`. Never retried."""
        return await self._run(
            _Calls.issue_token(
                kind,
                username=username,
                provider_id=provider_id,
                nonce=nonce,
                code_verifier=code_verifier,
                challenge=challenge,
                code_hash=code_hash,
                data=data,
                ttl_seconds=ttl_seconds,
            )
        )

    async def consume_token(
        self, kind: str, token: str, *, challenge: str | None = None
    ) -> TokenData:
        """See :meth:`Tessera.consume_token`. Never retried."""
        return await self._run(_Calls.consume_token(kind, token, challenge))

    async def peek_token(self, kind: str, token: str, *, challenge: str | None = None) -> TokenData:
        """See :meth:`Tessera.peek_token`."""
        return await self._run(_Calls.peek_token(kind, token, challenge))

    async def revoke_tokens(self, kind: str, username: str) -> int:
        """See :meth:`Tessera.revoke_tokens`."""
        return await self._run(_Calls.revoke_tokens(kind, username))

    async def hit(self, event: str, key: str, cost: int = 1) -> Decision:
        """See :meth:`Tessera.hit`. Never retried."""
        return await self._run(_Calls.hit(event, key, cost))

    async def peek_limit(self, event: str, key: str) -> Decision:
        """See :meth:`Tessera.peek_limit`."""
        return await self._run(_Calls.peek_limit(event, key))

    async def reset_limit(self, event: str, key: str) -> None:
        """See :meth:`Tessera.reset_limit`."""
        await self._run(_Calls.reset_limit(event, key))

    async def claim_once(self, key: str, ttl_seconds: int) -> bool:
        """See :meth:`Tessera.claim_once`. Never retried."""
        return await self._run(_Calls.claim_once(key, ttl_seconds))

    async def introspect_session(self, session: str) -> Session | None:
        """See :meth:`Tessera.introspect_session`."""
        return await self._run(_Calls.introspect_session(session))
