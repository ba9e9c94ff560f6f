"""`Message`: what to say, with per-channel overrides, a category and metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cascade_notify.errors import MessageError
from cascade_notify.models._checks import _SHORT_LIMIT, _check_text, _plain_json, strict_init


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """What to say.

    `overrides` holds per-channel settings, e.g. `{"email": {"html": ...}}`,
    `{"whatsapp": {"template": "parcel_arrived", "parameters": [...]}}`, or a
    channel-specific `text`. `category` is `transactional` or `marketing` (or
    any name a policy's step `categories` lists).
    """

    text: str
    subject: str | None = None
    category: str = "transactional"
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise MessageError(
                f"Message.text: must be a string, got {type(self.text).__name__}", field="text"
            )
        if not isinstance(self.overrides, Mapping):
            raise MessageError("Message.overrides: must be a mapping", field="overrides")
        if not self.text.strip() and not any(
            isinstance(o, Mapping) and ("text" in o or "template" in o)
            for o in self.overrides.values()
        ):
            raise MessageError("Message.text: is empty", field="text")
        _check_text(self.text, "text", None, MessageError)
        if self.subject is not None:
            if not isinstance(self.subject, str):
                raise MessageError("Message.subject: must be a string or None", field="subject")
            _check_text(self.subject, "subject", None, MessageError)
        if not isinstance(self.category, str) or not self.category:
            raise MessageError("Message.category: must be a non-empty string", field="category")
        _check_text(self.category, "category", _SHORT_LIMIT, MessageError)
        for channel, override in self.overrides.items():
            if not isinstance(override, Mapping):
                raise MessageError(
                    f"Message.overrides[{channel!r}]: must be a mapping", field="overrides"
                )
        # what every store can hold and gives back equal: plain JSON, copied as it is stored
        if self.overrides:
            object.__setattr__(self, "overrides", _plain_json(self.overrides, "overrides"))
        elif type(self.overrides) is not dict:
            object.__setattr__(self, "overrides", {})
        if not isinstance(self.metadata, Mapping):
            raise MessageError("Message.metadata: must be a mapping", field="metadata")
        if self.metadata:
            object.__setattr__(self, "metadata", _plain_json(self.metadata, "metadata"))
        elif type(self.metadata) is not dict:
            object.__setattr__(self, "metadata", {})

    def text_for(self, channel: str) -> str:
        """The text to send on `channel`: its override if it has one."""
        override = self.overrides.get(channel)
        if override is not None and isinstance(override.get("text"), str):
            text: str = override["text"]
            return text
        return self.text

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"text": self.text, "category": self.category}
        if self.subject is not None:
            data["subject"] = self.subject
        if self.overrides:
            data["overrides"] = {k: dict(v) for k, v in self.overrides.items()}
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        return cls(**data)

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> Message:
        """A message from `to_dict()` output that this library validated before it was
        stored: not validated again. Use `from_dict` for data from anywhere else."""
        message = object.__new__(cls)
        object.__setattr__(message, "text", data["text"])
        object.__setattr__(message, "subject", data.get("subject"))
        object.__setattr__(message, "category", data.get("category", "transactional"))
        object.__setattr__(message, "overrides", data.get("overrides", {}))
        object.__setattr__(message, "metadata", data.get("metadata", {}))
        return message


strict_init(Message, MessageError)
