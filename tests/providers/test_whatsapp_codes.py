"""`whatsapp_cloud`: every Graph error code of providers.md §1.5, and the readings of
what it leaves unconfirmed, one answer at a time through an injected client on a
`MockTransport` (the emulator names only some of the codes)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cascade_notify.errors import PermanentError, ProviderError, TransientError, UnreachableError
from cascade_notify.providers.whatsapp import WhatsAppCloudProvider, WhatsAppSettings

from ._support import PHONE, request

ACCOUNT = [0, 3, 10, 190, 200, 250, 299, 368, 131031, 131064, 131037, 131042, 131045, 133010]
TRANSIENT = [4, 80007, 130429, 131056, 131048, 1, 2, 131000, 131016, 131057]
UNREACHABLE = [131026, 131047, 131049, 131050, 130472, 130497]
PERMANENT = [100, 131008, 131009, 131021, 131051, 131052, 131053, 135000, 131030]
PERMANENT += [132000, 132001, 132005, 132007, 132008, 132012, 132015, 132016]
TABLE = (
    [(c, PermanentError, True) for c in ACCOUNT]
    + [(c, TransientError, None) for c in TRANSIENT]
    + [(c, UnreachableError, None) for c in UNREACHABLE]
    + [(c, PermanentError, False) for c in PERMANENT]
)


def graph(code: int, status: int = 400, **error: Any) -> httpx.Response:
    body = {"message": f"(#{code}) Title", "type": "OAuthException", "code": code, **error}
    body.setdefault("fbtrace_id", "AbC")
    return httpx.Response(status, json={"error": body})


async def answer_of(response: httpx.Response, **kw: Any) -> Any:
    """What `send()` makes of one answer, through an injected client on a MockTransport."""
    settings = WhatsAppSettings.model_validate(
        {"phone_number_id": "1", "access_token": "t", "app_secret": "s", "verify_token": "v"}
    )
    transport = httpx.MockTransport(lambda _: response)
    async with httpx.AsyncClient(transport=transport) as client:
        provider = WhatsAppCloudProvider("whatsapp", settings, client=client)
        try:
            return await provider.send(request(WhatsAppCloudProvider, "whatsapp", PHONE, **kw))
        except ProviderError as exc:
            return exc


@pytest.mark.parametrize(("code", "kind", "account"), TABLE)
@pytest.mark.parametrize("status", [400, 404, 500])
async def test_every_graph_code(
    code: int, kind: type[ProviderError], account: bool | None, status: int
) -> None:
    """Every code of §1.5 gets its class by the code alone, whatever HTTP status comes
    with it (the pairing is unconfirmed for most codes)."""
    error = await answer_of(graph(code, status))
    assert type(error) is kind and error.code == str(code)
    if kind is PermanentError:
        assert error.account is account


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (httpx.Response(502, text="<html>Bad Gateway</html>"), TransientError),
        (httpx.Response(503, text="down", headers={"retry-after": "7"}), TransientError),
        (httpx.Response(401, text="nope"), PermanentError),
        (httpx.Response(400, text="<html>what</html>"), PermanentError),
        (httpx.Response(200, text="<html>ok?</html>"), PermanentError),
        (httpx.Response(200, json={"messages": []}), PermanentError),
        (graph(999999, 400), PermanentError),
    ],
)
async def test_answers_nobody_classified(response: httpx.Response, kind: type) -> None:
    """A body that is not the envelope falls back to the HTTP status; an OK answer with no
    id, or a code no table lists, fails safe as permanent with the raw answer."""
    error = await answer_of(response)
    assert type(error) is kind
    assert response.text[:20] in str(error)
    if response.status_code == 503:
        assert error.retry_after == 7.0


async def test_retry_after_over_the_floor_and_subcode() -> None:
    """A Retry-After longer than a code's floor wins; a 190's subcode (unconfirmed meaning)
    is kept in the text, the class decided by 190 alone."""
    slow = graph(130429, 429)
    slow.headers["retry-after"] = "30"
    assert (await answer_of(slow)).retry_after == 30.0
    expired = await answer_of(graph(190, 401, error_subcode=463))
    assert expired.account and "subcode 463" in str(expired)


async def test_message_status_in_the_answer_is_not_needed() -> None:
    """`messages[0].message_status` (unconfirmed) may be there or not: the id is read."""
    for extra in ({}, {"message_status": "accepted"}):
        body = {"messaging_product": "whatsapp", "messages": [{"id": "wamid.X", **extra}]}
        assert (await answer_of(httpx.Response(200, json=body))).provider_message_id == "wamid.X"
