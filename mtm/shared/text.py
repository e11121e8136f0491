"""Text a database can hold: PostgreSQL refuses NUL characters and no database stores a lone surrogate.

Two answers to such text: what a person sent is refused with a reason (`storable_or_refused`, a pydantic
validator); what a model wrote is kept readable with the two replaced (`storable`).
"""

from __future__ import annotations

NUL_SHOWN = "\u2400"  # SYMBOL FOR NULL: what a NUL character reads as once stored
UNENCODABLE_SHOWN = "\ufffd"  # REPLACEMENT CHARACTER: what a lone surrogate reads as once stored


def encodable_or_refused(value: str) -> str:
    """`value` unchanged if it encodes as UTF-8 (a path must, to reach the filesystem); else a ValueError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def storable_or_refused(value: str) -> str:
    """`value` unchanged if the database can hold it; else a ValueError naming what is wrong."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return encodable_or_refused(value)


def storable(text: str) -> str:
    """`text` with each NUL shown as ␀ and each lone surrogate as U+FFFD, so any database can hold it."""
    text = text.replace("\x00", NUL_SHOWN)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(UNENCODABLE_SHOWN if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text
