"""The message form of a conversation page: the settings typed into it, parsed for playground.services.send_message,
and the values it shows (the last answer's settings, or exactly what the member typed into a send that was refused,
so a refusal costs no retyping)."""

from __future__ import annotations

import codecs
from typing import Any

from playground.params import MAX_MESSAGE_CHARS, GenerationParams

FIELDS = ("message", "temperature", "top_p", "max_new_tokens", "stop")
MAX_SETTING_CHARS = 1000  # a typed setting kept for the form; a longer one was never a valid setting


def stop_text(stops: list[str]) -> str:
    """Stop strings one per line, a newline or tab inside one written as \\n or \\t."""
    return "\n".join(codecs.encode(s, "unicode_escape").decode("ascii") for s in stops)


def shown_for(params: GenerationParams) -> dict[str, str]:
    """The form as it opens: an empty message and `params` (the last answer's settings)."""
    return {
        "message": "",
        "temperature": str(params.temperature),
        "top_p": str(params.top_p),
        "max_new_tokens": str(params.max_new_tokens),
        "stop": stop_text(params.stop),
    }


def typed(post: Any) -> dict[str, str]:
    """The form's values exactly as posted (bounded), to show again after a refusal."""
    values = {name: str(post.get(name, "")) for name in FIELDS}
    return {
        name: value[: MAX_MESSAGE_CHARS if name == "message" else MAX_SETTING_CHARS] for name, value in values.items()
    }


def kept(stored: Any, fallback: dict[str, str]) -> dict[str, str]:
    """The typed values kept in the session over a refusal's redirect, each missing one from `fallback`."""
    if isinstance(stored, str):  # a draft kept as the message alone
        stored = {"message": stored}
    if not isinstance(stored, dict):
        return fallback
    return {name: str(stored[name]) if isinstance(stored.get(name), str) else fallback[name] for name in FIELDS}


def parsed(post: Any) -> tuple[dict[str, Any], list[str]]:
    """The settings as typed: numbers parsed, stop strings one per line (\\n and \\t understood); and what could not
    be read, one sentence each."""
    raw: dict[str, Any] = {}
    problems = []
    for name, kind, label in (
        ("temperature", float, "Temperature"),
        ("top_p", float, "Top p"),
        ("max_new_tokens", int, "Max new tokens"),
    ):
        text = str(post.get(name, "")).strip()
        if not text:
            continue
        try:
            raw[name] = kind(text)
        except ValueError:
            problems.append(f"{label}: '{text[:20]}' is not a {'whole ' if kind is int else ''}number.")
    stops = []
    for line in str(post.get("stop", "")).splitlines():
        if line:
            try:
                stops.append(codecs.decode(line, "unicode_escape") if "\\" in line else line)
            except UnicodeDecodeError:
                stops.append(line)
    raw["stop"] = stops
    return raw, problems


def summary_of(values: dict[str, str]) -> str:
    """The settings in one line, for the closed settings box."""
    stops = len([line for line in values["stop"].splitlines() if line])
    line = f"temperature {values['temperature']}, top p {values['top_p']}, up to {values['max_new_tokens']} new tokens"
    return line + (f", {stops} stop string{'s' if stops != 1 else ''}" if stops else "")
