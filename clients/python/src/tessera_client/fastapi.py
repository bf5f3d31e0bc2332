"""FastAPI: :class:`TesseraSession`, a dependency that answers 401 without a live Tessera
session.

    from fastapi import Depends, FastAPI
    from tessera_client import AsyncTessera, Session
    from tessera_client.fastapi import TesseraSession

    signed_in = TesseraSession(AsyncTessera("http://127.0.0.1:8080", "k1"))

    @app.get("/me")
    async def me(session: Session = Depends(signed_in)) -> dict[str, str]:
        return {"username": session.username}

Needs the ``fastapi`` extra; ``import tessera_client`` alone never imports FastAPI.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from . import SESSION_COOKIE
from .client import AsyncTessera, Tessera
from .errors import StoreUnavailable
from .models import Session

__all__ = ["TesseraSession"]


class TesseraSession:
    """A dependency that reads the ``tessera_session`` cookie, introspects it and returns
    the :class:`~tessera_client.Session`; without a live session it answers 401, and 503
    when Tessera cannot say (never letting a request through unchecked).

    A synchronous :class:`~tessera_client.Tessera` is called in the thread pool, so it
    does not block the event loop.
    """

    def __init__(self, client: AsyncTessera | Tessera) -> None:
        self.client = client

    async def __call__(self, request: Request) -> Session:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise HTTPException(status_code=401, detail="not signed in")
        try:
            if isinstance(self.client, AsyncTessera):
                session = await self.client.introspect_session(cookie)
            else:
                session = await run_in_threadpool(self.client.introspect_session, cookie)
        except StoreUnavailable as e:
            raise HTTPException(
                status_code=503,
                detail="sign-in cannot be checked now",
                headers={"Retry-After": "1"},
            ) from e
        if session is None:
            raise HTTPException(status_code=401, detail="not signed in")
        return session
