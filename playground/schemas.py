"""Request and response bodies of the playground API; the generation settings are playground.params's declaration."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field

from mtm.shared.problems import Problem
from playground.models import GenerationStatus, TargetKind
from playground.params import MAX_MESSAGE_CHARS, GenerationParams


class ConversationIn(Schema):
    run_id: int | None = Field(None, description="A succeeded run whose model to chat with.")
    model_name: str = Field("", max_length=96, description="Or a valid registry model, e.g. org/name.")
    revision: str = Field("", max_length=255)
    system_prompt: str = Field("", max_length=4000)


class MessageIn(GenerationParams):
    message: str = Field(..., max_length=MAX_MESSAGE_CHARS, description="What the member says.")


class GenerationOut(Schema):
    id: int
    conversation_id: int
    status: Literal[tuple(GenerationStatus.values)]
    message: str
    reply: str = Field(description="The answer so far (all of it once the status is succeeded).")
    offset: int = Field(description="Characters of the reply skipped in `delta` (the `after` asked for).")
    delta: str = Field(description="The reply from `after` on: what the client has not read yet.")
    params: GenerationParams
    prompt_tokens: int | None
    new_tokens: int
    finish_reason: str = Field(
        description='Why the answer ended: "stop" (the model ended it), "length" (max_new_tokens), "context" (the '
        'model\'s context length filled first), "stop_string" (a stop string); "" while it is not over.'
    )
    left_out_turns: int = Field(
        description="How many of the conversation's oldest earlier turns the prompt left out so that it fits the "
        "model's context with room for the answer (0: the whole conversation was read). The system prompt and this "
        "message are never left out; when they alone do not fit, the generation fails with prompt_too_long."
    )
    cold: bool | None = Field(description="The model was loaded for this message (true) or already loaded (false).")
    load_seconds: float | None
    time_to_first_token: float | None = Field(description="Seconds from the message to the first token.")
    tokens_per_second: float | None
    worker: str
    device: str
    error: Problem | None
    created_at: datetime
    started_at: datetime | None
    first_token_at: datetime | None
    finished_at: datetime | None


class ConversationOut(Schema):
    id: int
    kind: Literal[tuple(TargetKind.values)]
    run_id: int | None
    model_name: str
    revision: str
    target: str
    system_prompt: str
    created_at: datetime
    updated_at: datetime
    turns: list[GenerationOut] = Field(default_factory=list)
