"""How many SMS a text is billed as, and a transliteration that makes it cheaper.

A gateway bills per segment (../shared/docs/providers.md section 7):

- GSM-7, when every character is in the GSM 03.38 default alphabet or its extension
  table: 160 septets in a single SMS, 153 per segment once split (the 6-octet
  concatenation header takes 7 septets). Extension characters (`^ { } \\ [ ~ ] | €`
  and form feed) are an escape plus the character: 2 septets each.
- UCS-2, as soon as one character is outside GSM-7 (any Cyrillic letter, most emoji,
  the backtick, curly quotes, dashes, `…`): 70 UTF-16 code units in a single SMS, 67
  per segment. A character outside the Basic Multilingual Plane (most emoji) is a
  surrogate pair and counts 2.

`count(text)` gives `(segments, encoding)`; `cost(text, price)` what a gateway bills.
Some gateways keep an escape pair or a surrogate pair from being split across two
segments, so a segment may hold one unit less: that is per gateway and unconfirmed
(section 7.2), and this module counts as Twilio documents, without that rule.

`transliterate(text)` writes Cyrillic in Latin letters (and the typographic marks a
Russian text is full of in their GSM-7 look-alikes) by the fixed table `TABLE`, so a
Russian text fits GSM-7: 160 characters a single SMS instead of 70.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

Encoding = Literal["GSM-7", "UCS-2"]

#: The GSM 03.38 default alphabet: one septet each (ESC, 0x1B, is not a character).
GSM_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The extension table: escape + character, two septets each.
GSM_EXTENSION: Final = frozenset("^{}\\[~]|€\f")

GSM_SINGLE: Final = 160
GSM_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67


class Segments(NamedTuple):
    """How a text is billed: the number of segments and the encoding it goes in."""

    segments: int
    encoding: Encoding


def is_gsm7(text: str) -> bool:
    """Whether every character of `text` is in GSM-7 (basic or extension table)."""
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def units(text: str) -> tuple[int, Encoding]:
    """The length a gateway counts: septets in GSM-7, else UTF-16 code units in UCS-2."""
    if is_gsm7(text):
        return sum(2 if c in GSM_EXTENSION else 1 for c in text), "GSM-7"
    return len(text.encode("utf-16-le", "surrogatepass")) // 2, "UCS-2"


def count(text: str) -> Segments:
    """The segments `text` is billed as, and its encoding. An empty text is one SMS."""
    length, encoding = units(text)
    single, part = (GSM_SINGLE, GSM_PART) if encoding == "GSM-7" else (UCS2_SINGLE, UCS2_PART)
    return Segments(1 if length <= single else -(-length // part), encoding)


def cost(text: str, price_per_segment: float) -> float:
    """What sending `text` costs at `price_per_segment`."""
    return count(text).segments * price_per_segment


_LOWER: Final = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya",
    # Ukrainian and Belarusian letters Russian lacks
    "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip
_MARKS: Final = {
    "«": '"', "»": '"', "„": '"', "“": '"', "”": '"', "‘": "'", "’": "'", "`": "'",
    "–": "-", "—": "-", "−": "-", "…": "...", "\u00a0": " ", "№": "N",
}  # fmt: skip

#: The whole table `transliterate()` applies, character by character: Russian letters by
#: a simplified BGN/PCGN romanization (ж zh, kha kh, ц ts, щ shch, й y, ю yu, я ya; ъ and
#: ь dropped), capitals capitalised (Щ -> Shch), and typographic marks as plain ASCII.
TABLE: Final[dict[str, str]] = {
    **_LOWER,
    **{k.upper(): v.capitalize() for k, v in _LOWER.items()},
    **_MARKS,
}
_TRANSLATION: Final = str.maketrans(TABLE)


def transliterate(text: str) -> str:
    """`text` with Cyrillic written in Latin letters and typographic marks made ASCII, by
    `TABLE`; every other character is kept (an emoji still makes the text UCS-2)."""
    return text.translate(_TRANSLATION)


__all__ = [
    "GSM_BASIC",
    "GSM_EXTENSION",
    "GSM_PART",
    "GSM_SINGLE",
    "TABLE",
    "UCS2_PART",
    "UCS2_SINGLE",
    "Encoding",
    "Segments",
    "cost",
    "count",
    "is_gsm7",
    "transliterate",
    "units",
]
