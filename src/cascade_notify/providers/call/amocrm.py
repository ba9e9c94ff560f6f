"""`type: amocrm_call_task`: the call task as a task in amoCRM / Kommo (API v4,
providers.md §10.3), with a long-lived token.

`send()` finds the contact by phone (`GET /api/v4/contacts?query=`, each hit checked by
the digits of its PHONE field; nobody: a new contact, or a permanent failure under
`on_unknown_customer: fail`) and adds a call task (`task_type_id: 1`) due by the window's
end in Unix seconds. amoCRM has no idempotency key: a resend first looks for the open task
with our marker in its text.

amoCRM signs nothing: its webhook is only a hint, taken at a URL with a secret `key` in
its query (`webhook_secret`), and the task is read back with our token; only
`is_completed: true` counts, as `delivered` with code `done`. Open tasks are polled as
the backstop. A success elsewhere completes the task with a result saying why (our own
completion is recognised and never read as the operator's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, quote

import httpx
from pydantic import Field, SecretStr, model_validator

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import PermanentError, ProviderError, TransientError
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._http import Answer, HttpClient, HttpProvider, json_body
from cascade_notify.providers._signing import BadSignature, same
from cascade_notify.providers.base import (
    Inbound,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WithdrawRequest,
)
from cascade_notify.providers.call._task import CallOverrides, CallTask, build_task

CALL_TASK: Final = 1
CANCELLED: Final = "Cancelled by cascade_notify:"


def _digits(phone: str) -> str:
    digits = "".join(c for c in phone if c.isdigit())
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


class AmoCrmSettings(ProviderSettings):
    """Settings of `type: amocrm_call_task`: the account (`subdomain`, or `api_url` for
    Kommo or the emulator), a long-lived `access_token`, the operator, and the secret
    `key` its webhook URL carries (`{receipts}/{name}?key=<webhook_secret>`)."""

    subdomain: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]{1,63}$",
        description="The account's subdomain: `https://<subdomain>.amocrm.ru`; give this or "
        "`api_url`.",
    )
    api_url: str | None = Field(
        default=None,
        description="The account's API root instead of `subdomain` (Kommo, the emulator).",
    )
    access_token: SecretStr = Field(
        description="A long-lived access token (`Authorization: Bearer`)."
    )
    responsible_user_id: int = Field(
        gt=0, description="The amoCRM user id of the operator the tasks are for."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The key the webhook URL carries (`{receipts}/{name}?key=...`); requests "
        "without it are refused. `null`: no webhooks, open tasks are polled.",
    )
    on_unknown_customer: Literal["create_contact", "fail"] = Field(
        default="create_contact",
        description="A phone number no contact has: `create_contact` (a new contact gets the "
        "task) or `fail` the step.",
    )
    timeout: Duration = Field(
        default=15.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    channel: str = Field(default="call", min_length=1, description="The channel the tasks are for.")

    @model_validator(mode="after")
    def _account(self) -> AmoCrmSettings:
        if self.subdomain is None and self.api_url is None:
            raise ValueError("give subdomain (https://<subdomain>.amocrm.ru) or api_url")
        return self

    @property
    def base(self) -> str:
        return (self.api_url or f"https://{self.subdomain}.amocrm.ru").rstrip("/")


class AmoCrmCallTaskProvider(HttpProvider):
    """`type: amocrm_call_task`: a call task on the customer's contact in amoCRM."""

    type_name = "amocrm_call_task"
    default_channel = "call"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.DELIVERED})
    idempotent_sends = True  # a resend looks for the task first
    withdraws = True
    withdraw_always = True
    poll_interval = 300.0
    poll_batch = 50
    webhook_methods = frozenset({"POST"})
    Settings = AmoCrmSettings
    Overrides = CallOverrides
    settings: AmoCrmSettings

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        *,
        clock: Clock | None = None,
        client: httpx.AsyncClient | None = None,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__(name, settings, clock=clock, client=client, http=http)
        self._base = self.settings.base

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; its JSON (None for 204), or our error for amoCRM's."""
        headers = {
            "authorization": f"Bearer {self.settings.access_token.get_secret_value()}",
            "content-type": "application/json",
        }
        content = None if body is None else json_body(body)
        answer = await self.request(method, self._base + path, content=content, headers=headers)
        if answer.status == 204:
            return None
        if answer.ok:
            try:
                return answer.json()
            except ValueError:
                raise TransientError(
                    f"{path}: the answer is not JSON", provider=self.name, code="not_json"
                ) from None
        raise self._refused(answer, path)

    def _refused(self, answer: Answer, path: str) -> ProviderError:
        try:
            data = answer.json()
        except ValueError:
            data = {}
        detail = data.get("detail") or data.get("title") if isinstance(data, dict) else None
        message = f"{path}: HTTP {answer.status}" + (f": {detail}" if detail else "")
        if answer.status == 429:  # no wait hint is documented: back off a second at least
            return TransientError(message, provider=self.name, code="429", retry_after=1.0)
        if answer.status in (401, 402, 403):
            return PermanentError(
                message, provider=self.name, code=str(answer.status), account=True
            )
        return self.refusal(answer, message)

    # out

    async def send(self, request: SendRequest) -> SendResult:
        task = build_task(request, self.clock.now())
        contact = await self._contact(task)
        if request.resend:
            found = await self._find(contact, task)
            if found is not None:
                return SendResult(found)
        body = [
            {
                "task_type_id": CALL_TASK,
                "text": f"{task.title}. {task.description()}",
                "complete_till": int(task.due_by),
                "entity_type": "contacts",
                "entity_id": contact,
                "responsible_user_id": self.settings.responsible_user_id,
                "request_id": task.task_id,
            }
        ]
        created = await self.api("POST", "/api/v4/tasks", body)
        try:
            return SendResult(str(created["_embedded"]["tasks"][0]["id"]))
        except (KeyError, IndexError, TypeError):
            raise PermanentError(
                f"POST /api/v4/tasks answered {created!r}"[:300], provider=self.name
            ) from None

    async def _contact(self, task: CallTask) -> int:
        wanted = _digits(task.phone)
        queries = [task.phone] + ([wanted[1:]] if len(wanted) == 11 else [])
        for query in queries:
            found = await self.api("GET", f"/api/v4/contacts?query={quote(query)}&limit=5")
            contacts = (found or {}).get("_embedded", {}).get("contacts", []) if found else []
            for contact in contacts:
                if wanted in _phones(contact):
                    return int(contact["id"])
        if self.settings.on_unknown_customer == "fail":
            raise PermanentError(
                "no contact has this phone in amoCRM", provider=self.name, code="unknown"
            )
        new = {
            "name": task.customer.get("name") or task.phone,
            "custom_fields_values": [{"field_code": "PHONE", "values": [{"value": task.phone}]}],
        }
        created = await self.api("POST", "/api/v4/contacts", [new])
        try:
            return int(created["_embedded"]["contacts"][0]["id"])
        except (KeyError, IndexError, TypeError, ValueError):
            raise PermanentError(
                f"POST /api/v4/contacts answered {created!r}"[:300], provider=self.name
            ) from None

    async def _find(self, contact: int, task: CallTask) -> str | None:
        found = await self.api(
            "GET",
            "/api/v4/tasks?filter[entity_type]=contacts"
            f"&filter[entity_id]={contact}&filter[is_completed]=0",
        )
        for row in (found or {}).get("_embedded", {}).get("tasks", []) if found else []:
            if task.marker in str(row.get("text", "")):
                return str(row["id"])
        return None

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """Complete the task with a result that says why; False if it is gone."""
        why = (
            f"delivered on {request.delivered_on}"
            if request.delivered_on
            else f"no longer needed ({request.reason})"
        )
        body = {"is_completed": True, "result": {"text": f"{CANCELLED} {why}"}}
        try:
            await self.api("PATCH", f"/api/v4/tasks/{int(request.provider_message_id)}", body)
        except PermanentError as exc:
            if exc.code == "404":
                return False
            raise
        return True

    # the outcome

    def _receipts(self, rows: Sequence[Any]) -> list[Receipt]:
        found = []
        for row in rows:
            if not isinstance(row, dict) or row.get("is_completed") is not True:
                continue
            result = row.get("result")
            text = result.get("text") if isinstance(result, dict) else None
            if isinstance(text, str) and text.startswith(CANCELLED):
                continue  # our own withdrawal, not the operator's word
            found.append(
                Receipt(
                    provider=self.name,
                    provider_message_id=str(row.get("id")),
                    status=ReceiptStatus.DELIVERED,
                    ts=self.clock.now(),
                    code="done",
                    receipt_id=f"{row.get('id')}:completed",
                )
            )
        return found

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        ids = [i for i in provider_message_ids if i.isdigit()]
        if not ids:
            return []
        query = "&".join(f"filter[id][]={i}" for i in ids)
        found = await self.api("GET", f"/api/v4/tasks?{query}&limit=250")
        return self._receipts((found or {}).get("_embedded", {}).get("tasks", []) if found else [])

    async def receive(self, request: WebhookRequest) -> Inbound:
        """A hint at a URL holding our secret key: the tasks it names are read back."""
        secret = self.settings.webhook_secret
        if secret is None:
            raise BadSignature("no webhook_secret is configured for amoCRM webhooks")
        if not same(request.query.get("key", ""), secret.get_secret_value()):
            raise BadSignature("the webhook URL's key is missing or wrong", status=404)
        fields = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        subdomain = dict(fields).get("account[subdomain]")
        if self.settings.subdomain and subdomain and subdomain != self.settings.subdomain:
            raise BadSignature(f"the webhook is about account {subdomain!r}, not ours")
        ids = sorted(
            {v for k, v in fields if k.startswith("task[") and k.endswith("][id]") and v.isdigit()}
        )
        if not ids:
            return Inbound()
        return Inbound(receipts=await self.poll(ids[: self.poll_batch]))


def _phones(contact: Any) -> set[str]:
    found: set[str] = set()
    for field in contact.get("custom_fields_values") or [] if isinstance(contact, dict) else []:
        if isinstance(field, dict) and field.get("field_code") == "PHONE":
            for value in field.get("values") or []:
                if isinstance(value, dict):
                    found.add(_digits(str(value.get("value", ""))))
    return found


__all__ = ["AmoCrmCallTaskProvider", "AmoCrmSettings"]
