"""The JSON shapes of conversations and generations, shared by the API and the page's polled partial."""

from __future__ import annotations

from typing import Any

from playground.models import Conversation, Generation


def generation_dict(generation: Generation, after: int = 0) -> dict[str, Any]:
    reply = generation.reply
    offset = min(max(0, after), len(reply))
    error = None
    if generation.error_code:
        error = {"code": generation.error_code, "message": generation.error_message, "hint": generation.error_hint}
    tps = generation.tokens_per_second
    ttft = generation.time_to_first_token
    return {
        "id": generation.pk,
        "conversation_id": generation.conversation_id,
        "status": generation.status,
        "message": generation.message,
        "reply": reply,
        "offset": offset,
        "delta": reply[offset:],
        "params": generation.params,
        "prompt_tokens": generation.prompt_tokens,
        "new_tokens": generation.new_tokens,
        "finish_reason": generation.finish_reason,
        "left_out_turns": generation.left_out_turns,
        "cold": generation.cold,
        "load_seconds": None if generation.load_seconds is None else round(generation.load_seconds, 3),
        "time_to_first_token": None if ttft is None else round(ttft, 3),
        "tokens_per_second": None if tps is None else round(tps, 1),
        "worker": generation.worker_name,
        "device": generation.device,
        "error": error,
        "created_at": generation.created_at,
        "started_at": generation.started_at,
        "first_token_at": generation.first_token_at,
        "finished_at": generation.finished_at,
    }


def conversation_dict(conversation: Conversation, *, turns: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": conversation.pk,
        "kind": conversation.kind,
        "run_id": conversation.run_id,
        "model_name": conversation.model_name,
        "revision": conversation.revision,
        "target": conversation.target_label,
        "system_prompt": conversation.system_prompt,
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "turns": [],
    }
    if turns:
        data["turns"] = [generation_dict(g) for g in conversation.turns.order_by("pk")]
    return data
