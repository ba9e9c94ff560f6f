"""Segments as a gateway bills them (providers.md section 7), and transliteration.

The figures: GSM-7 is 160 septets in one SMS and 153 per segment once split; UCS-2 is 70
UTF-16 code units in one SMS and 67 per segment. So the 8-segment caps are 8 x 153 =
1224 septets and 8 x 67 = 536 code units.
"""

from __future__ import annotations

import pytest

from cascade_notify.providers.sms.segments import (
    TABLE,
    Segments,
    cost,
    count,
    is_gsm7,
    transliterate,
    units,
)


@pytest.mark.parametrize(
    ("text", "billed"),
    [
        ("", (1, "GSM-7")),
        ("a" * 160, (1, "GSM-7")),  # 160 septets: one SMS
        ("a" * 161, (2, "GSM-7")),  # split: 153 + 8
        ("a" * 306, (2, "GSM-7")),  # 2 x 153
        ("a" * 307, (3, "GSM-7")),
        ("Your parcel A-1234 has arrived. @£$¥ ÄÖÑÜ§¿", (1, "GSM-7")),
    ],
)
def test_gsm7_counts_septets_160_then_153(text: str, billed: tuple[int, str]) -> None:
    """GSM-7: one SMS up to 160 septets, then segments of 153."""
    assert count(text) == billed


@pytest.mark.parametrize(
    ("text", "septets", "segments"),
    [
        ("€" * 10, 20, 1),  # providers.md's example: 10 x € = 20 septets
        ("€" * 80, 160, 1),
        ("€" * 81, 162, 2),
        ("a" * 159 + "€", 161, 2),  # one extension character tips 159 letters over 160
        ("^{}\\[~]|€\f", 20, 1),  # the whole extension table, 2 septets each
    ],
)
def test_extension_characters_count_two_septets(text: str, septets: int, segments: int) -> None:
    """The extension table is escape + character: two septets, still GSM-7."""
    assert units(text) == (septets, "GSM-7")
    assert count(text) == (segments, "GSM-7")


@pytest.mark.parametrize(
    ("length", "segments"), [(70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_cyrillic_is_ucs2_70_then_67(length: int, segments: int) -> None:
    """Any Cyrillic letter makes the whole text UCS-2: one SMS up to 70, then 67 each."""
    assert count("я" * length) == (segments, "UCS-2")
    assert count("a" * (length - 1) + "я") == (segments, "UCS-2")


@pytest.mark.parametrize(
    ("text", "code_units", "segments"),
    [
        ("😀" * 35, 70, 1),  # U+1F600 is a surrogate pair: 2 units each
        ("😀" * 36, 72, 2),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", 8, 1),  # family: 3 x 2 + 2 ZWJ
        ("\u2764\ufe0f", 2, 1),  # heart + variation selector: every code point counts
        ("ok 👍" + "a" * 66, 71, 2),  # 69 characters, 71 code units: two SMS
    ],
)
def test_emoji_count_in_utf16_code_units(text: str, code_units: int, segments: int) -> None:
    """Emoji force UCS-2 and count in UTF-16 code units (a surrogate pair is 2)."""
    assert units(text) == (code_units, "UCS-2")
    assert count(text) == (segments, "UCS-2")


def test_backtick_forces_ucs2() -> None:
    """The backtick is not GSM-7: 160 characters with one are 160 UCS-2 units, 3 SMS;
    with an apostrophe instead they are one GSM-7 SMS."""
    assert not is_gsm7("`")
    assert count("`" + "a" * 159) == (3, "UCS-2")
    assert count("'" + "a" * 159) == (1, "GSM-7")


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("a" * 1224, 8),  # 8 x 153: the 8-segment cap (SMS.ru's 205 beyond it)
        ("a" * 1225, 9),
        ("€" * 612, 8),  # 1224 septets
        ("€" * 613, 9),
        ("я" * 536, 8),  # 8 x 67
        ("я" * 537, 9),
        ("😀" * 268, 8),  # 536 code units
        ("😀" * 269, 9),
    ],
)
def test_eight_segment_caps(text: str, segments: int) -> None:
    """8 segments hold 1224 GSM-7 septets or 536 UCS-2 code units, and no more."""
    assert count(text).segments == segments


def test_count_is_a_named_tuple() -> None:
    """`count()` is `(segments, encoding)` with names."""
    billed = count("я" * 71)
    assert isinstance(billed, Segments)
    assert (billed.segments, billed.encoding) == (2, "UCS-2")


def test_cost_is_segments_times_price() -> None:
    """What a gateway bills: 71 Cyrillic letters are 2 SMS, 160 Latin letters one."""
    assert cost("я" * 71, 0.05) == pytest.approx(0.10)
    assert cost("a" * 160, 0.05) == pytest.approx(0.05)


def test_transliterate_russian_to_latin() -> None:
    """Russian letters by the documented table; capitals stay capitals."""
    assert transliterate("Ваша посылка прибыла") == "Vasha posylka pribyla"
    assert transliterate("Щука, Жёлудь, Юля, съезд, Хабаровск, Цой, Эй") == (
        "Shchuka, Zhelud, Yulya, sezd, Khabarovsk, Tsoy, Ey"
    )
    assert transliterate("Київ, Ґанок, Єва") == "Kiyiv, Ganok, Yeva"


def test_transliterate_typographic_marks() -> None:
    """Russian typography (guillemets, dashes, №, ellipsis, no-break space) becomes GSM-7."""
    text = transliterate("«Заказ №\u00a05» — готов…")
    assert text == '"Zakaz N 5" - gotov...'
    assert is_gsm7(text)


def test_transliterate_makes_russian_cheaper() -> None:
    """A 92-character Russian SMS is 2 UCS-2 segments; transliterated it is one GSM-7 SMS."""
    text = (
        "Здравствуйте! Ваш заказ 1234 доставлен в пункт выдачи на улице Ленина, 5. "
        "Ждём вас до 20:00."
    )
    assert count(text) == (2, "UCS-2")
    latin = transliterate(text)
    assert is_gsm7(latin)
    assert count(latin) == (1, "GSM-7")


def test_transliterate_keeps_what_the_table_does_not_name() -> None:
    """Latin text is untouched; an emoji stays (and keeps the text UCS-2)."""
    assert transliterate("Hello, world 1-2-3") == "Hello, world 1-2-3"
    assert transliterate("Привет 😀") == "Privet 😀"
    assert count(transliterate("Привет 😀")).encoding == "UCS-2"


def test_table_writes_only_gsm7() -> None:
    """Everything the table writes is GSM-7."""
    assert all(is_gsm7(latin) for latin in TABLE.values())
