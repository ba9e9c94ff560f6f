"""`type: call_webhook`: the call task for any call centre or CRM, signed the Standard
Webhooks way both ways (providers.md §10.4).

Out: `send()` POSTs `call_task.created` (§10.4.1) to `url` with `webhook-id:
msg_<task_id>`; the task id is our attempt id, the same on every retry, so the receiver
de-duplicates on it and the provider declares idempotent sends. 2xx is accepted (a
`crm_task_id` in the answer becomes the provider message id), 409 too (it already has
the task); §10.4.4 classifies the rest. A later success elsewhere withdraws the task:
`call_task.cancelled` with `{"task_id", "reason": "delivered_elsewhere"}`.

In: the call centre POSTs `call_task.completed` (§10.4.5), signed with the same secret.
`answered` is `delivered`; `no_answer` with `final: true` is `failed` (with `final:
false` it is recorded and the step keeps waiting); `wrong_number` is `failed` with code
`wrong_number`, which makes the number unusable on every phone channel (`gone_on`).
Each callback's receipt id is its `webhook-id`: a duplicate changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final

import httpx
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import PermanentError, ProviderError
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._http import Answer, HttpClient, HttpProvider, json_body, load_json
from cascade_notify.providers._signing import StandardWebhooks, decode_whsec
from cascade_notify.providers.base import (
    Inbound,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
    WithdrawRequest,
)
from cascade_notify.providers.call._task import GONE_ON, CallOverrides, build_task
from cascade_notify.providers.webhook import _as_list, _check_secrets, _check_url

CREATED: Final = "call_task.created"
CANCELLED: Final = "call_task.cancelled"
COMPLETED: Final = "call_task.completed"
OUTCOMES: Final = ("answered", "no_answer", "wrong_number")
_MAX_ID: Final = 256
_READ: Final = 4096


class CallWebhookSettings(ProviderSettings):
    """Settings of `type: call_webhook`. `secret` is one `whsec_` secret or a list
    (rotation); `callback_url` is where the call centre posts outcomes (the public
    address of `{prefix}/{provider name}` of the receipts app)."""

    url: Annotated[str, AfterValidator(_check_url)] = Field(
        description="Where the tasks are POSTed (http or https), signed the Standard Webhooks way."
    )
    secret: Annotated[
        tuple[SecretStr, ...],
        BeforeValidator(_as_list),
        Field(min_length=1),
        AfterValidator(_check_secrets),
    ] = Field(
        description="The `whsec_...` secret that signs requests both ways; a list signs with "
        "each and accepts any (rotation)."
    )
    callback_url: str | None = Field(
        default=None,
        description="Where the call centre posts outcomes: the public address of this "
        "provider's receipts endpoint, sent in each task.",
    )
    timeout: Duration = Field(
        default=15.0, gt=0, description="How long the POST to `url` may take."
    )
    tolerance: Duration = Field(
        default=300.0,
        gt=0,
        description="How far an outcome's `webhook-timestamp` may be from wall-clock time "
        "before it is refused.",
    )
    channel: str = Field(default="call", min_length=1, description="The channel the tasks are for.")


class CallWebhookProvider(HttpProvider):
    """`type: call_webhook`: posts call tasks to a call centre; takes their outcomes."""

    type_name = "call_webhook"
    default_channel = "call"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(
        {ReceiptStatus.SENT, ReceiptStatus.DELIVERED, ReceiptStatus.FAILED}
    )
    idempotent_sends = True
    withdraws = True
    withdraw_always = True
    gone_on = GONE_ON
    signals = True  # a wrong number is news about the phone on every phone channel
    webhook_methods = frozenset({"POST"})
    Settings = CallWebhookSettings
    Overrides = CallOverrides
    settings: CallWebhookSettings

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
        self._signer = StandardWebhooks(
            [decode_whsec(s.get_secret_value()) for s in self.settings.secret],
            tolerance=self.settings.tolerance,
        )
        self._url = str(httpx.URL(self.settings.url))

    # out

    async def send(self, request: SendRequest) -> SendResult:
        now = self.clock.now()
        task = build_task(request, now)
        body = self._envelope(CREATED, task.payload(self.settings.callback_url), now)
        answer = await self._post(f"msg_{task.task_id}", body)
        if answer.status == 409:
            return SendResult(task.task_id)
        if answer.ok:
            return SendResult(_crm_task_id(answer) or task.task_id)
        raise self._refused(answer)

    async def withdraw(self, request: WithdrawRequest) -> bool:
        """`call_task.cancelled`: True if the call centre took it, False if it no longer
        has the task (404, 410); others raise."""
        now = self.clock.now()
        data = {"task_id": request.attempt_id, "reason": request.reason}
        if request.delivered_on is not None:
            data["delivered_on"] = request.delivered_on
        answer = await self._post(
            f"msg_{request.attempt_id}_cancelled", self._envelope(CANCELLED, data, now)
        )
        if answer.ok or answer.status == 409:
            return True
        if answer.status in (404, 410):
            return False
        raise self._refused(answer)

    def _envelope(self, kind: str, data: Mapping[str, object], now: float) -> bytes:
        stamp = datetime.fromtimestamp(int(now), UTC).isoformat().replace("+00:00", "Z")
        try:
            return json_body({"type": kind, "timestamp": stamp, "data": data})
        except ValueError as exc:
            raise PermanentError(
                f"the call task cannot be sent as JSON: {exc}", provider=self.name, code="not_json"
            ) from exc

    async def _post(self, webhook_id: str, body: bytes) -> Answer:
        headers = {"content-type": "application/json", **self._signer.sign(webhook_id, body)}
        return await self.request("POST", self._url, content=body, headers=headers, limit=_READ)

    def _refused(self, answer: Answer) -> ProviderError:
        message = f"HTTP {answer.status}" + (f": {answer.text(200)}" if answer.body else "")
        if answer.status == 410:
            return PermanentError(
                message + " (the endpoint is retired)", provider=self.name, code="410", account=True
            )
        if answer.status in (401, 403):  # a wrong secret or URL is configuration, not account
            return PermanentError(message, provider=self.name, code=str(answer.status))
        return self.refusal(answer, message)

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """The outcome in a `call_task.completed` signed with one of our secrets."""
        webhook_id = self._signer.verify(request.headers, request.body)
        return Inbound(receipts=[self.parse(webhook_id, request.body)])

    def parse(self, webhook_id: str, body: bytes) -> Receipt:
        """The receipt a verified callback body means; ValueError if malformed."""
        envelope = load_json(body)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
            raise ValueError("a callback is a JSON object with a 'data' object")
        if envelope.get("type") != COMPLETED:
            raise ValueError(f"type must be {COMPLETED!r}")
        data = envelope["data"]
        task_id = data.get("task_id")
        if not isinstance(task_id, str) or not 0 < len(task_id) <= _MAX_ID:
            raise ValueError(f"data.task_id must be a string of 1 to {_MAX_ID} characters")
        outcome = data.get("outcome")
        if outcome not in OUTCOMES:
            raise ValueError(f"data.outcome must be one of {', '.join(OUTCOMES)}")
        final = data.get("final", True)
        if not isinstance(final, bool):
            raise ValueError("data.final must be true or false")
        note = data.get("note")
        note = note[:500] if isinstance(note, str) else None
        if outcome == "answered":
            status, code = ReceiptStatus.DELIVERED, None
        elif outcome == "wrong_number":
            status, code = ReceiptStatus.FAILED, "wrong_number"
        elif final:
            status, code = ReceiptStatus.FAILED, "no_answer"
        else:  # tried, will try again: recorded, and the step keeps waiting
            status, code = ReceiptStatus.SENT, "no_answer"
        return Receipt(
            provider=self.name,
            provider_message_id=task_id,
            attempt_id=task_id,
            status=status,
            ts=_when(data.get("completed_at") or envelope.get("timestamp"), self.clock.now()),
            code=code,
            error=note if status is not ReceiptStatus.DELIVERED else None,
            receipt_id=webhook_id,
        )


def _crm_task_id(answer: Answer) -> str | None:
    try:
        data = answer.json()
    except ValueError:
        return None
    value = data.get("crm_task_id") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_ID else None


def _when(value: object, now: float) -> float:
    if not isinstance(value, str) or len(value) > 64:
        return now
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


__all__ = ["CallWebhookProvider", "CallWebhookSettings"]
