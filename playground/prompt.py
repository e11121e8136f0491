"""The prompt a new message is answered from, encoded with the model's tokenizer. Which earlier turns it carries: all
of them while they fit the model's context with room for the answer, else only the most recent ones that do. The system prompt and the new message are always carried; when
they alone leave no room for one new token, the caller refuses the message (prompt_too_long)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtm.shared.problems import Problem

Message = dict[str, str]
Turn = tuple[str, str]  # the member's message and the model's reply

# When turns must be left out, they make room for the member's max_new_tokens but for at most this share of the
# context: a model with a short context would otherwise lose nearly all the conversation for a long answer limit.
ANSWER_SHARE_OF_CONTEXT = 4


@dataclass(frozen=True)
class Fitted:
    """The encoded prompt, its length in tokens, and how many of the oldest earlier turns it leaves out."""

    inputs: Any
    prompt_tokens: int
    left_out: int


def messages_for(system_prompt: str, turns: list[Turn], message: str) -> list[Message]:
    """Chat messages: the system prompt (when there is one), each earlier turn, the new message."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    for asked, answered in turns:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    messages.append({"role": "user", "content": message})
    return messages


def plain_prompt(messages: list[Message]) -> str:
    """For a model without a chat template: the message itself, or a transcript ending where the answer goes."""
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


def encode(tokenizer: Any, messages: list[Message]) -> Any:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True, tokenize=True
        )
    return tokenizer(plain_prompt(messages), return_tensors="pt")


def answer_room(limit: int, max_new_tokens: int) -> int:
    """The tokens kept free for the answer when earlier turns must be left out."""
    return max(1, min(max_new_tokens, limit // ANSWER_SHARE_OF_CONTEXT))


def fit(
    tokenizer: Any,
    system_prompt: str,
    turns: list[Turn],
    message: str,
    limit: int | None,
    room: int,
) -> Fitted:
    """The prompt with the fewest oldest turns left out such that its tokens plus `room` are at most `limit` (no
    limit: every turn); with every turn left out when even that does not leave `room`."""

    def encoded(left_out: int) -> Fitted:
        inputs = encode(tokenizer, messages_for(system_prompt, turns[left_out:], message))
        return Fitted(inputs, int(inputs["input_ids"].shape[1]), left_out)

    whole = encoded(0)
    if limit is None or whole.prompt_tokens + room <= limit:
        return whole
    # Leaving out more turns never lengthens the prompt: search for the fewest to leave out.
    best: Fitted | None = None
    low, high = 1, len(turns)
    while low <= high:
        middle = (low + high) // 2
        candidate = encoded(middle)
        if candidate.prompt_tokens + room <= limit:
            best, high = candidate, middle - 1
        else:
            low = middle + 1
    if best is not None:
        return best
    return encoded(len(turns)) if turns else whole


def too_long(prompt_tokens: int, limit: int, with_system_prompt: bool) -> Problem:
    """Why a message is refused when it (with the system prompt) leaves the model no room to answer."""
    what = "Your message with the system prompt" if with_system_prompt else "Your message"
    return Problem(
        "prompt_too_long",
        f"{what} is {prompt_tokens} tokens long; this model reads at most {limit}, so no answer fits even with "
        "every earlier turn of the conversation left out.",
        "Send a shorter message"
        + (", or start a new conversation with a shorter system prompt." if with_system_prompt else "."),
    )
