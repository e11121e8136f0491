"""An answer cut short by the model's context length says so: its finish reason is "context", not the token limit's
"length", when the member's max_new_tokens is far from reached and the model's context has filled."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from playground.engine import Loaded, encode, generate_into, history
from playground.models import Conversation, Generation, GenerationStatus, TargetKind
from playground.params import GenerationParams


@pytest.fixture
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.generation_config.eos_token_id = None  # random weights: never let an early end decide the reason
    tokenizer.eos_token_id = None
    return tokenizer, model


def answer(db, tiny, room: int | None, max_new_tokens: int) -> Generation:
    tokenizer, model = tiny
    carol = User.objects.create_user("carol")
    conversation = Conversation.objects.create(owner=carol, kind=TargetKind.MODEL, model_name="test-org/tiny-llama")
    generation = Generation.objects.create(
        conversation=conversation, owner=carol, message="Hello there", status=GenerationStatus.RUNNING
    )
    prompt = int(encode(tokenizer, history(generation))["input_ids"].shape[1])
    model.config.max_position_embeddings = prompt + room if room is not None else 4096
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0)
    generate_into(generation, Loaded(None, model, tokenizer, "cpu", 0, None), params)
    generation.refresh_from_db()
    return generation


def test_an_answer_the_context_cut_short_ends_by_the_context(db, tiny):
    generation = answer(db, tiny, room=5, max_new_tokens=40)
    assert (generation.status, generation.new_tokens, generation.finish_reason) == ("succeeded", 5, "context")


def test_an_answer_that_reached_the_members_limit_ends_by_the_token_limit(db, tiny):
    generation = answer(db, tiny, room=None, max_new_tokens=6)
    assert (generation.status, generation.new_tokens, generation.finish_reason) == ("succeeded", 6, "length")
