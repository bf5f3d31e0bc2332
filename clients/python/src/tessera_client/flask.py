"""Flask: :func:`login_required`, a view decorator that answers 401 without a live Tessera
session and puts the session on ``flask.g.tessera_session``.

    from flask import Flask, g
    from tessera_client import Tessera
    from tessera_client.flask import login_required

    tessera = Tessera("http://127.0.0.1:8080", "k1")

    @app.get("/me")
    @login_required(tessera)
    def me() -> dict[str, str]:
        return {"username": g.tessera_session.username}

Needs the ``flask`` extra; ``import tessera_client`` alone never imports Flask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import abort, g, request

from . import SESSION_COOKIE
from .client import Tessera
from .errors import StoreUnavailable

__all__ = ["login_required"]

P = ParamSpec("P")
R = TypeVar("R")


def login_required(client: Tessera) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator for views that need a signed-in user: it reads the ``tessera_session``
    cookie, introspects it through ``client``, and calls the view with the
    :class:`~tessera_client.Session` on ``flask.g.tessera_session``; without a live session
    it aborts with 401, and with 503 when Tessera cannot say."""

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            cookie = request.cookies.get(SESSION_COOKIE)
            if not cookie:
                abort(401)
            try:
                session = client.introspect_session(cookie)
            except StoreUnavailable:
                abort(503)
            if session is None:
                abort(401)
            g.tessera_session = session
            return view(*args, **kwargs)

        return wrapped

    return decorate
