"""The examples in examples/ (FastAPI, Starlette, Django) serve receipts over real HTTP."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from webhook_harness import SECRET, receipt, serve, sign

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OLGA, IVAN = "olga-staff-token-0123", "ivan-staff-token-0123"


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """The three example modules, each imported once (Django configures itself at import)
    with the bundled policy, its secrets from the environment."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("APP_WEBHOOK_URL", "http://127.0.0.1:9/inbox")
        env.setenv("APP_WEBHOOK_SECRET", SECRET)
        env.delenv("CASCADE_POLICY", raising=False)
        env.setenv("STAFF_TOKENS", f"olga:operator:{OLGA},ivan:agent:{IVAN}")
        env.setenv("STAFF_ACCOUNTS", "olga:operator:olga-password,ivan:agent:ivan-password")
        loaded = {}
        for name in ("fastapi_app", "starlette_app", "django_asgi"):
            spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # Django finds its ROOT_URLCONF by module name
            spec.loader.exec_module(module)
            loaded[name] = module
        yield loaded
        for name in loaded:
            sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("name", "attr"),
    [("fastapi_app", "app"), ("starlette_app", "app"), ("django_asgi", "application")],
)
async def test_example_serves_receipts(
    examples: dict[str, ModuleType], name: str, attr: str
) -> None:
    """Health is 200 once the lifespan started the notifier; a signed receipt is 200, an
    unsigned one 401; the host framework still answers its own routes."""
    app = getattr(examples[name], attr)
    body = receipt("some-message", "delivered")
    async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        health = await http.get("/receipts/-/health")
        signed = await http.post(
            "/receipts/app", content=body, headers=sign(SECRET, "w1", body, time.time())
        )
        unsigned = await http.post("/receipts/app", content=body)
        nowhere = await http.post("/receipts/nope", content=body)
        if name != "fastapi_app":
            home = await http.get("/")
            assert home.status_code == 200 and "receipts" in home.json()
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (signed.status_code, signed.json()["unknown"]) == (200, 1)
    assert unsigned.status_code == 401
    assert nowhere.status_code == 404


async def test_fastapi_example_sends(examples: dict[str, ModuleType]) -> None:
    """The FastAPI example's /notify route starts a cascade (its app URL refuses, so the
    app step is retried while SMS waits behind it)."""
    app = examples["fastapi_app"].app
    async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.post(
            "/notify", json={"user_id": "u1", "app": "dev-1", "sms": "+79161234567", "text": "hi"}
        )
    assert answer.status_code == 200 and len(answer.json()["delivery_id"]) == 32


async def test_fastapi_example_mounts_the_support_page_behind_its_own_sign_in(
    examples: dict[str, ModuleType],
) -> None:
    """/support/ takes the app's own staff tokens (the ones its `current_staff`
    dependency checks): none is 401, an agent reads, an operator gets the breaker forms."""
    app = examples["fastapi_app"].app
    async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        nobody = await http.get("/support/")
        agent = await http.get("/support/operator", headers={"authorization": f"Bearer {IVAN}"})
        operator = await http.get("/support/operator", headers={"authorization": f"Bearer {OLGA}"})
        me = await http.get("/staff/me", headers={"authorization": f"Bearer {OLGA}"})
    assert nobody.status_code == 401
    assert agent.status_code == 200 and 'name="csrf"' not in agent.text
    assert operator.status_code == 200 and 'name="csrf"' in operator.text
    assert 'href="/support/operator"' in operator.text  # links stay under the mount
    assert me.json() == {"user": "olga", "role": "operator"}


async def test_django_example_mounts_the_support_page_behind_djangos_signed_cookie(
    examples: dict[str, ModuleType],
) -> None:
    """Django's login view sets its signed cookie; the support page reads it back with
    Django's signer; a forged cookie is 401."""
    app = examples["django_asgi"].application
    async with serve(app, lifespan="on") as url, httpx.AsyncClient(base_url=url) as http:
        nobody = await http.get("/support/")
        wrong = await http.post("/login", data={"name": "olga", "password": "nope"})
        signed_in = await http.post("/login", data={"name": "olga", "password": "olga-password"})
        page = await http.get("/support/operator")  # the client keeps the cookie
        async with httpx.AsyncClient(base_url=url, cookies={"staff": "olga:operator:x"}) as evil:
            forged = await evil.get("/support/")
    assert nobody.status_code == 401
    assert wrong.status_code == 403
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/support/"
    assert page.status_code == 200 and "signed in as olga (operator)" in page.text
    assert forged.status_code == 401
