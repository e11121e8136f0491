"""The generation settings of one playground message, declared once: the page's form, the API body and the worker
read this shape (stored on Generation.params)."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_MESSAGE_CHARS = 20_000

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]


def max_new_tokens_limit() -> int:
    return int(settings.MTM_PLAYGROUND_MAX_NEW_TOKENS)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="0 answers greedily (the same answer every time); up to 2."
    )
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling: keep the most likely tokens up to p.")
    max_new_tokens: int = Field(
        256, description="At most this many new tokens (1 to MTM_PLAYGROUND_MAX_NEW_TOKENS, 1024 by default)."
    )
    stop: list[StopString] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS, description="Stop when the answer contains one of these."
    )

    @field_validator("max_new_tokens")
    @classmethod
    def _bounded(cls, value: int) -> int:
        limit = max_new_tokens_limit()
        if not 1 <= value <= limit:
            raise ValueError(f"max new tokens must be from 1 to {limit} (this portal's limit); got {value}")
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _no_blank(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [s for s in value if not (isinstance(s, str) and s == "")]
        return value

    @field_validator("stop")
    @classmethod
    def _printable(cls, value: list[str]) -> list[str]:
        for number, text in enumerate(value, 1):
            if problem := stop_string_problem(text):
                raise ValueError(f"stop string {number} ({text!r}) {problem}")
        return value


# Line breaks and tabs are text a model writes, and a stop string may well be one ("\n\n").
_TEXT_CONTROLS = frozenset("\t\n\r")


def stop_string_problem(text: str) -> str:
    """What is wrong with one stop string ('' when nothing): a NUL or another control character, which no answer
    is written with (and no database stores a NUL), or a lone surrogate, which is not text."""
    for char in text:
        if char in _TEXT_CONTROLS:
            continue
        kind = unicodedata.category(char)
        if char == "\x00":
            return "contains a NUL character; remove it"
        if kind == "Cc":
            return f"contains the control character U+{ord(char):04X}; only tabs and line breaks are allowed"
        if kind == "Cs":
            return "is not valid Unicode text (it holds a lone surrogate)"
    return ""


def check_message(text: Any) -> str:
    """The member's message, or ValueError saying what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The message is empty: write something for the model to answer.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ValueError(f"The message has {len(text)} characters; the playground takes at most {MAX_MESSAGE_CHARS}.")
    if "\x00" in text:
        raise ValueError("The message contains a NUL character; remove it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("The message is not valid Unicode text (it holds a lone surrogate).") from None
    return text


def describe(error: ValidationError) -> str:
    """One line per problem, naming the setting: 'max_new_tokens: max new tokens must be from 1 to 1024 ...'."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)
