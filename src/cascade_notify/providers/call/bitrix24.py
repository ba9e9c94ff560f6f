"""`type: bitrix24_call_task`: the call task as a to-do in the Bitrix24 CRM (providers.md
§10.2), through an inbound webhook URL.

`send()` finds the customer by phone (`crm.duplicate.findbycomm`: a contact, else a lead;
nobody: a new lead, or a permanent failure under `on_unknown_customer: fail`), then adds
a to-do on their card (`crm.activity.todo.add`) due by the task's `due_by`, written in the
customer's local time with its offset. Bitrix24 has no idempotency key: a resend first
looks for the to-do by the marker in its description, so resending is safe.

Learning the outcome: the `ONCRMACTIVITYUPDATE` event (form-encoded, authenticated only by
`auth[application_token]`) is a hint; the to-do is read back (`crm.activity.get`) and only
`COMPLETED: "Y"` counts, as `delivered` with code `done` (`auto` when Bitrix24 closed it by
a rule). Events are never resent, so open to-dos are polled (`crm.activity.list`) as the
backstop. A success elsewhere withdraws the to-do (`crm.activity.delete`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
from pydantic import AfterValidator, Field, SecretStr

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

CONTACT: Final = 3
LEAD: Final = 1
_ACCOUNT: Final = frozenset(
    {
        "NO_AUTH_FOUND", "invalid_token", "authorization_error", "ERROR_OAUTH",
        "APPLICATION_NOT_FOUND", "PAYMENT_REQUIRED", "ACCESS_DENIED", "INVALID_CREDENTIALS",
        "user_access_error", "PORTAL_DELETED", "OVERLOAD_LIMIT", "expired_token",
    }
)  # fmt: skip
_TRANSIENT: Final = frozenset({"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"})


def _check_webhook(secret: SecretStr) -> SecretStr:
    url = secret.get_secret_value()
    parts = httpx.URL(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or len(segments) < 3 or segments[-3] != "rest":
        raise ValueError(
            "webhook_url must be the inbound webhook, https://<portal>/rest/<user_id>/<code>/"
        )
    return SecretStr(url.rstrip("/") + "/")


class Bitrix24Settings(ProviderSettings):
    """Settings of `type: bitrix24_call_task`. `webhook_url` is the inbound webhook (the
    URL is the credential: keep it in `${ENV}`); `application_token` is the outgoing
    webhook's token that authenticates its events."""

    webhook_url: Annotated[SecretStr, AfterValidator(_check_webhook)] = Field(
        description="The inbound webhook URL (`https://<portal>/rest/<user_id>/<code>/`, scope "
        "`crm`); the URL is the credential: keep it in `${ENV}`."
    )
    responsible_id: int = Field(
        gt=0, description="The Bitrix24 user id of the operator the to-dos are for."
    )
    application_token: SecretStr | None = Field(
        default=None,
        description="The outgoing webhook's token that authenticates its events; `null`: "
        "events are refused (open to-dos are still polled).",
    )
    on_unknown_customer: Literal["create_lead", "fail"] = Field(
        default="create_lead",
        description="A phone number no contact or lead has: `create_lead` (a new lead gets the "
        "to-do) or `fail` the step.",
    )
    ping_offsets: tuple[int, ...] = Field(
        default=(0, 30),
        description="Reminders to the operator, in minutes before the to-do's deadline "
        "(`pingOffsets`).",
    )
    timeout: Duration = Field(
        default=15.0,
        gt=0,
        description="How long one API call may take before it counts as a timeout (transient, "
        "or an unknown outcome once the request went out).",
    )
    channel: str = Field(default="call", min_length=1, description="The channel the tasks are for.")


class Bitrix24CallTaskProvider(HttpProvider):
    """`type: bitrix24_call_task`: a to-do on the customer's card in Bitrix24."""

    type_name = "bitrix24_call_task"
    default_channel = "call"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    idempotent_sends = True  # a resend looks for the to-do first
    withdraws = True
    withdraw_always = True
    poll_interval = 300.0
    poll_batch = 50
    webhook_methods = frozenset({"POST"})
    Settings = Bitrix24Settings
    Overrides = CallOverrides
    settings: Bitrix24Settings

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
        self._base = self.settings.webhook_url.get_secret_value()

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One REST method; its `result`, or our error for Bitrix24's."""
        answer = await self.request(
            "POST",
            f"{self._base}{method}.json",
            content=json_body(params),
            headers={"content-type": "application/json"},
        )
        try:
            data = answer.json()
        except ValueError:
            data = None
        if answer.ok and isinstance(data, dict) and "result" in data:
            return data["result"]
        raise self._refused(answer, data, method)

    def _refused(self, answer: Answer, data: Any, method: str) -> ProviderError:
        error = str(data.get("error", "")) if isinstance(data, dict) else ""
        detail = str(data.get("error_description", "")) if isinstance(data, dict) else ""
        message = f"{method}: HTTP {answer.status} {error} {detail}".strip()
        code = error or str(answer.status)
        if error in _TRANSIENT:
            return TransientError(message, provider=self.name, code=code, retry_after=1.0)
        if error in _ACCOUNT:
            return PermanentError(message, provider=self.name, code=code, account=True)
        if answer.ok:  # 200 without a result: an answer nobody classified
            return PermanentError(message or "no result", provider=self.name, code="no_result")
        return self.refusal(answer, message, code)

    # out

    async def send(self, request: SendRequest) -> SendResult:
        task = build_task(request, self.clock.now())
        owner_type, owner_id = await self._owner(task)
        if request.resend:
            found = await self._find(owner_type, owner_id, task)
            if found is not None:
                return SendResult(found)
        params = {
            "ownerTypeId": owner_type,
            "ownerId": owner_id,
            "deadline": self._local(task.due_by, request.recipient.timezone),
            "title": task.title,
            "description": task.description(),
            "responsibleId": self.settings.responsible_id,
            "pingOffsets": list(self.settings.ping_offsets),
        }
        result = await self.call("crm.activity.todo.add", params)
        created = result.get("id") if isinstance(result, dict) else result
        if not isinstance(created, int | str) or isinstance(created, bool):
            raise PermanentError(f"crm.activity.todo.add answered {result!r}", provider=self.name)
        return SendResult(str(created))

    @staticmethod
    def _local(ts: float, timezone: str | None) -> str:
        """Bitrix24's date: the customer's local time with its offset."""
        zone = ZoneInfo(timezone or "UTC")
        return datetime.fromtimestamp(int(ts), zone).isoformat(timespec="seconds")

    async def _owner(self, task: CallTask) -> tuple[int, int]:
        phones = [task.phone]
        if task.phone.startswith("+7") and len(task.phone) == 12:
            phones.append("8" + task.phone[2:])  # how Russian numbers are often stored
        for phone in phones:
            found = await self.call(
                "crm.duplicate.findbycomm", {"type": "PHONE", "values": [phone]}
            )
            if isinstance(found, dict):  # nothing found is an empty list, not an object
                for kind, type_id in (("CONTACT", CONTACT), ("LEAD", LEAD)):
                    ids = [int(i) for i in found.get(kind) or [] if str(i).isdigit()]
                    if ids:
                        return type_id, max(ids)
        if self.settings.on_unknown_customer == "fail":
            raise PermanentError(
                "no contact or lead has this phone in Bitrix24", provider=self.name, code="unknown"
            )
        fields = {
            "title": task.title,
            "fm": [{"typeId": "PHONE", "valueType": "MOBILE", "value": task.phone}],
        }
        if task.customer.get("name"):
            fields["name"] = task.customer["name"]
        created = await self.call("crm.item.add", {"entityTypeId": LEAD, "fields": fields})
        item = created.get("item") if isinstance(created, dict) else None
        if not isinstance(item, dict) or not str(item.get("id", "")).isdigit():
            raise PermanentError(f"crm.item.add answered {created!r}", provider=self.name)
        return LEAD, int(item["id"])

    async def _find(self, owner_type: int, owner_id: int, task: CallTask) -> str | None:
        """The to-do an earlier try of this task created, if it did (search before retry)."""
        found = await self.call(
            "crm.activity.list",
            {
                "filter": {
                    "OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id,
                    "PROVIDER_ID": "CRM_TODO", "%DESCRIPTION": task.marker,
                },
                "select": ["ID"],
            },
        )  # fmt: skip
        rows = found if isinstance(found, list) else []
        return str(rows[0]["ID"]) if rows and isinstance(rows[0], dict) else None

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """`crm.activity.delete`; False if the to-do is gone already."""
        try:
            await self.call("crm.activity.delete", {"id": int(request.provider_message_id)})
        except PermanentError as exc:
            if exc.code in ("NOT_FOUND", "OWNER_NOT_FOUND"):
                return False
            raise
        return True

    # the outcome

    def _receipts(self, rows: list[Any]) -> list[Receipt]:
        found = []
        for row in rows:
            if not isinstance(row, dict) or row.get("COMPLETED") != "Y":
                continue
            code = "auto" if str(row.get("STATUS")) == "3" else "done"
            found.append(
                Receipt(
                    provider=self.name,
                    provider_message_id=str(row.get("ID")),
                    status=ReceiptStatus.DELIVERED,
                    ts=self.clock.now(),
                    code=code,
                    receipt_id=f"{row.get('ID')}:completed",
                )
            )
        return found

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        ids = [int(i) for i in provider_message_ids if i.isdigit()]
        if not ids:
            return []
        rows = await self.call(
            "crm.activity.list",
            {"filter": {"@ID": ids}, "select": ["ID", "COMPLETED", "STATUS", "LAST_UPDATED"]},
        )
        return self._receipts(rows if isinstance(rows, list) else [])

    async def receive(self, request: WebhookRequest) -> Inbound:
        """An event is a hint: its token is checked, then the to-do is read back."""
        token = self.settings.application_token
        if token is None:
            raise BadSignature("no application_token is configured for Bitrix24 events")
        fields = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        given = fields.get("auth[application_token]", "")
        if not same(given, token.get_secret_value()):
            raise BadSignature("auth[application_token] is missing or wrong")
        if fields.get("event", "").upper() != "ONCRMACTIVITYUPDATE":
            return Inbound()
        activity = fields.get("data[FIELDS][ID]", "")
        if not activity.isdigit():
            raise ValueError("data[FIELDS][ID] must be an activity id")
        row = await self.call("crm.activity.get", {"id": int(activity)})
        return Inbound(receipts=self._receipts([row]))


__all__ = ["Bitrix24CallTaskProvider", "Bitrix24Settings"]
