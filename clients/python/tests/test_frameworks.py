"""The FastAPI dependency and the Flask decorator, with a session from Tessera's `/auth`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import API_KEY, Deployment, free_port, sign_in
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from flask import Flask, g

from tessera_client import AsyncTessera, Session, Tessera
from tessera_client.fastapi import TesseraSession
from tessera_client.flask import login_required


@pytest.fixture(scope="module")
def signed_in(deployment: Deployment) -> tuple[str, str]:
    """An account signed in through `/auth`: (username, session cookie)."""
    return sign_in(deployment.urls[0])


def fastapi_app(client: AsyncTessera | Tessera) -> FastAPI:
    app = FastAPI()
    require_session = TesseraSession(client)

    @app.get("/me")
    async def me(session: Session = Depends(require_session)) -> dict[str, str]:  # noqa: B008
        return {"username": session.username, "session_id": session.session_id}

    return app


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_fastapi_dependency(
    deployment: Deployment, signed_in: tuple[str, str], flavour: str
) -> None:
    username, cookie = signed_in
    client = (
        AsyncTessera(deployment.urls[1], API_KEY)
        if flavour == "async"
        else Tessera(deployment.urls[1], API_KEY)
    )
    with TestClient(fastapi_app(client)) as http:
        r = http.get("/me", headers={"Cookie": f"tessera_session={cookie}"})
        assert r.status_code == 200, r.text
        assert r.json()["username"] == username
        assert http.get("/me").status_code == 401
        r = http.get("/me", headers={"Cookie": "tessera_session=forged"})
        assert r.status_code == 401
    if isinstance(client, Tessera):
        client.close()


def test_fastapi_dependency_answers_503_when_tessera_is_away() -> None:
    client = AsyncTessera(f"http://127.0.0.1:{free_port()}", API_KEY, retries=0)
    with TestClient(fastapi_app(client)) as http:
        r = http.get("/me", headers={"Cookie": "tessera_session=x"})
        assert r.status_code == 503


def test_flask_login_required(deployment: Deployment, signed_in: tuple[str, str]) -> None:
    username, cookie = signed_in
    app = Flask(__name__)
    tessera = Tessera(deployment.urls[2], API_KEY)

    @app.get("/me")
    @login_required(tessera)
    def me() -> dict[str, str]:
        session: Session = g.tessera_session
        return {"username": session.username}

    with tessera:
        assert app.test_client().get("/me").status_code == 401
        http = app.test_client()
        http.set_cookie("tessera_session", cookie)
        r = http.get("/me")
        assert r.status_code == 200
        assert r.get_json() == {"username": username}
        http.set_cookie("tessera_session", "forged")
        assert http.get("/me").status_code == 401
    assert me.__name__ == "me"


def test_the_core_imports_without_the_frameworks() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None; sys.modules['flask'] = None\n"
        "import tessera_client\n"
        "assert tessera_client.Tessera and tessera_client.AsyncTessera\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
