"""Telegram's parse modes, as strict as the Bot API: the text a message shows, or the
`can't parse entities` reason (providers.md §2.6).

Checked: MarkdownV2's 18 reserved characters outside entities, escapes, entities left
open; HTML's supported tags, their nesting, a bare `<`; legacy Markdown's four markers.
Not checked: URL validity inside links, custom emoji ids.
"""

from __future__ import annotations

import html
import re
from typing import Final

RESERVED: Final = set("_*[]()~`>#+-=|{}.!")
HTML_TAGS: Final = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a"}
    | {"code", "pre", "blockquote", "tg-emoji"}
)
_TAG: Final = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*>"
)
_ENTITY: Final = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|lt|gt|amp|quot);")


class MarkupError(ValueError):
    """The text does not parse in its mode; the message is Telegram's reason."""


def plain_text(text: str, mode: str | None) -> str:
    """The text as shown once `mode` (None, `MarkdownV2`, `HTML`, `Markdown`) is parsed."""
    if not mode:
        return text
    lowered = mode.lower()
    if lowered == "markdownv2":
        return _markdown_v2(text)
    if lowered == "html":
        return _html(text)
    if lowered == "markdown":
        return _markdown(text)
    raise MarkupError(f"unsupported parse_mode {mode!r}")


def _offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _reserved(char: str) -> MarkupError:
    return MarkupError(
        f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
    )


def _unclosed(text: str, index: int) -> MarkupError:
    return MarkupError(
        f"Can't find end of the entity starting at byte offset {_offset(text, index)}"
    )


def _markdown_v2(text: str) -> str:
    out: list[str] = []
    open_: list[tuple[str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 < n and 1 <= ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
                continue
            raise _reserved("\\")
        if c == "`":
            fence = "```" if text.startswith("```", i) else "`"
            end, content = _code(text, i + len(fence), fence)
            if end < 0:
                raise _unclosed(text, i)
            if fence == "```" and "\n" in content:
                content = content.split("\n", 1)[1]  # the first line names the language
            out.append(content)
            i = end + len(fence)
            continue
        marker = next((m for m in ("__", "||") if text.startswith(m, i)), c)
        if marker in ("*", "_", "__", "~", "||"):
            if open_ and open_[-1][0] == marker:
                open_.pop()
            else:
                open_.append((marker, i))
            i += len(marker)
            continue
        if c == "[" or (c == "!" and text.startswith("![", i)):
            open_.append(("[", i))
            i += 1 if c == "[" else 2
            continue
        if c == "]" and open_ and open_[-1][0] == "[":
            start = open_.pop()[1]
            if not text.startswith("(", i + 1):
                raise _unclosed(text, start)
            close = _url_end(text, i + 2)
            if close < 0:
                raise _unclosed(text, start)
            i = close + 1
            continue
        if c == ">" and (i == 0 or text[i - 1] == "\n"):
            i += 1
            continue
        if c in RESERVED:
            raise _reserved(c)
        out.append(c)
        i += 1
    if open_:
        raise _unclosed(text, open_[0][1])
    return "".join(out)


def _code(text: str, start: int, fence: str) -> tuple[int, str]:
    """Where an inline code or pre entity ends, and its content (only ` and \\ escape)."""
    out: list[str] = []
    i = start
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "`\\":
            out.append(text[i + 1])
            i += 2
            continue
        if text.startswith(fence, i):
            return i, "".join(out)
        out.append(text[i])
        i += 1
    return -1, ""


def _url_end(text: str, start: int) -> int:
    i = start
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 2
            continue
        if text[i] == ")":
            return i
        i += 1
    return -1


def _html(text: str) -> str:
    out: list[str] = []
    open_: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "<":
            match = _TAG.match(text, i)
            if match is None:
                raise MarkupError(f'Unsupported start tag "" at byte offset {_offset(text, i)}')
            closing, name = match.group(1) == "/", match.group(2).lower()
            if name not in HTML_TAGS:
                kind = "end" if closing else "start"
                raise MarkupError(
                    f'Unsupported {kind} tag "{name}" at byte offset {_offset(text, i)}'
                )
            if closing:
                if not open_ or open_[-1] != name:
                    expected = f'expected "</{open_[-1]}>", ' if open_ else ""
                    raise MarkupError(
                        f"Unmatched end tag at byte offset {_offset(text, i)}, "
                        f'{expected}found "</{name}>"'
                    )
                open_.pop()
            else:
                open_.append(name)
            i = match.end()
            continue
        if c == "&":
            entity = _ENTITY.match(text, i)
            if entity is not None:
                out.append(html.unescape(entity.group(0)))
                i = entity.end()
                continue
        out.append(c)
        i += 1
    if open_:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{open_[-1]}"')
    return "".join(out)


def _markdown(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        if c in "_*`":
            end = text.find(c, i + 1)
            if end < 0:
                raise _unclosed(text, i)
            out.append(text[i + 1 : end])
            i = end + 1
            continue
        if c == "[":
            close = text.find("](", i)
            end = text.find(")", close + 2) if close >= 0 else -1
            if end < 0:
                raise _unclosed(text, i)
            out.append(text[i + 1 : close])
            i = end + 1
            continue
        out.append(c)
        i += 1
    return "".join(out)
