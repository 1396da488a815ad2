"""Showing user text inside messages: shortened, and with unusual characters named.

Messages quote what the user wrote so they can find it, but a value can be megabytes long (a
129 KB RSE expression once came back whole in its own error) or hold characters that look like
others: a Cyrillic ER (U+0420) in ``IN2P3`` reads as a Latin ``P``, and a message that only says
"does not match" leaves the reader staring at text that looks right. These helpers quote at
most a few dozen characters and name every character outside printable ASCII by code point.
"""

from __future__ import annotations

import unicodedata

__all__ = ["describe_character", "non_ascii_note", "shorten"]

SHOWN_CHARACTERS = 60
"""How much of a long value a message quotes."""


def shorten(value: str, limit: int = SHOWN_CHARACTERS) -> str:
    """Quote ``value`` as Python would (control characters escaped), cut to ``limit``.

    A cut value says how long it really was, so the reader knows it is not whole.
    """
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def describe_character(char: str) -> str:
    """Name one character for a message: ``'&'``, or ``'\u0420' (U+0420 CYRILLIC ...)``.

    Printable ASCII is shown as itself; anything else also gets its code point and Unicode name,
    so a homoglyph or an invisible character is identified rather than merely shown.
    """
    if " " <= char <= "~":
        return repr(char)
    name = unicodedata.name(char, "")
    if not name:
        category = unicodedata.category(char)
        name = "a control character" if category == "Cc" else f"category {category}"
    return f"{char!r} (U+{ord(char):04X} {name})"


def non_ascii_note(value: str) -> str:
    """Say where the first character outside printable ASCII is, or return ``""``.

    Names, RSE names and DIDs are ASCII: a pattern mismatch caused by a look-alike letter is
    explained by this note (``; character 5 is '\u0420' (U+0420 CYRILLIC CAPITAL LETTER ER),
    not ASCII``).
    """
    for index, char in enumerate(value):
        if not " " <= char <= "~":
            return f"; character {index + 1} is {describe_character(char)}, not ASCII"
    return ""
