"""The playground's form and context: a message refused while the previous answer was still coming keeps what she
typed (the message and her settings) in the form, and a conversation grown past the model's context keeps answering
by leaving out its oldest turns, saying how many; only a new message that does not fit alone fails, and its failed
answer shows no token line. Generation runs in-process with the real tiny Llama (the worker's generate_into)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.utils.html import escape

from mtm.models import ApiToken
from playground.engine import Loaded, generate_into
from playground.models import Conversation, Generation, GenerationStatus, TargetKind
from playground.params import GenerationParams
from playground.prompt import encode
from tests.api_client import call
from tests.clients import secure_client
from workers.models import Worker
from workers.queues import INFERENCE_QUEUE

SYSTEM = "You are a helpful support bot."
TYPED = {"message": "And 2 plus 3?", "temperature": "0.3", "top_p": "0.8", "max_new_tokens": "20", "stop": "###"}


@pytest.fixture
def chat(db, portal_roots, tiny_llama_in_cache) -> Conversation:
    """Carol's conversation with the tiny Llama; a playground worker is live (its row as the worker reports it)."""
    Worker.objects.create(name="inference@host", host="host", queues=[INFERENCE_QUEUE])
    carol = User.objects.create_user("carol")
    return Conversation.objects.create(
        owner=carol, kind=TargetKind.MODEL, model_name=tiny_llama_in_cache[0], system_prompt=SYSTEM
    )


def still_answering(chat: Conversation) -> Generation:
    return Generation.objects.create(
        conversation=chat, owner=chat.owner, message="Hello! What is 2 plus 1?", status=GenerationStatus.RUNNING
    )


def form_fields(html: str) -> dict[str, str]:
    """The message form's values as the browser would show them."""
    form = html[html.index('class="stacked-form chat-form"') :]
    inputs = dict(re.findall(r'<input type="number" name="(\w+)"[^>]*value="([^"]*)"', form))
    textareas = dict(re.findall(r'<textarea name="(\w+)"[^>]*>([^<]*)</textarea>', form))
    return {**inputs, **textareas}


def test_a_send_refused_while_answering_keeps_the_message_and_settings_in_the_form(chat):
    still_answering(chat)
    page = secure_client(chat.owner).post(f"/playground/{chat.pk}/send/", TYPED, follow=True)
    html = page.content.decode()
    assert "This conversation is still answering your previous message." in html
    assert form_fields(html) == {k: escape(v) for k, v in TYPED.items()}
    assert Generation.objects.count() == 1  # nothing was sent
    # The kept values are for the page that reports the refusal only: the next visit shows the last answer's.
    again = form_fields(secure_client(chat.owner).get(f"/playground/{chat.pk}/").content.decode())
    assert again["message"] == "" and again["max_new_tokens"] == "256"


def test_an_htmx_send_refused_while_answering_answers_the_form_with_what_was_typed(chat):
    still_answering(chat)
    response = secure_client(chat.owner).post(f"/playground/{chat.pk}/send/", TYPED, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["Vary"] and "HX-Request" in response["Vary"]
    html = response.content.decode()
    assert "<html" not in html  # the form alone, to swap in place
    assert "This conversation is still answering your previous message." in html and 'role="alert"' in html
    assert form_fields(html) == {k: escape(v) for k, v in TYPED.items()}


def test_settings_refused_as_invalid_stay_as_typed(chat):
    typed = {**TYPED, "max_new_tokens": "99999", "temperature": "warm"}
    page = secure_client(chat.owner).post(f"/playground/{chat.pk}/send/", typed, follow=True)
    html = page.content.decode()
    assert "Temperature: &#x27;warm&#x27; is not a number." in html
    assert form_fields(html) == {k: escape(v) for k, v in typed.items()}
    fixed = secure_client(chat.owner).post(
        f"/playground/{chat.pk}/send/", {**typed, "temperature": "0.3"}, HTTP_HX_REQUEST="true"
    )
    assert "max_new_tokens: max new tokens must be from 1 to" in fixed.content.decode()
    assert form_fields(fixed.content.decode())["max_new_tokens"] == "99999"


def test_an_htmx_send_that_is_queued_takes_the_browser_to_the_conversation(chat):
    response = secure_client(chat.owner).post(f"/playground/{chat.pk}/send/", TYPED, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and response["HX-Redirect"] == f"/playground/{chat.pk}/"
    assert Generation.objects.get().message == TYPED["message"]


# -- a conversation longer than the model's context ------------------------------------------------------------------


@pytest.fixture
def tiny(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    model.generation_config.eos_token_id = None  # random weights: never let an early end decide the length
    tokenizer.eos_token_id = None
    return tokenizer, model


EARLIER = [(f"Question {n}: what is {n} plus {n}?", f"Answer {n}: " + "the sum is even. " * 12) for n in range(1, 5)]


def answered_turns(chat: Conversation) -> None:
    for message, reply in EARLIER:
        Generation.objects.create(
            conversation=chat, owner=chat.owner, message=message, reply=reply, status=GenerationStatus.SUCCEEDED
        )


def prompt_tokens(tokenizer, turns: list[tuple[str, str]], message: str) -> int:
    messages = [{"role": "system", "content": SYSTEM}]
    for asked, answered in turns:
        messages += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]
    messages.append({"role": "user", "content": message})
    return int(encode(tokenizer, messages)["input_ids"].shape[1])


def answer(chat: Conversation, tiny, message: str, limit: int, max_new_tokens: int = 8) -> Generation:
    """The new message answered as the worker answers it, the model reading at most `limit` tokens."""
    tokenizer, model = tiny
    model.config.max_position_embeddings = limit
    generation = Generation.objects.create(
        conversation=chat,
        owner=chat.owner,
        message=message,
        status=GenerationStatus.RUNNING,
        cold=True,
        load_seconds=0.01,
        device="cpu",
    )
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0)
    generate_into(generation, Loaded(None, model, tokenizer, "cpu", 0, None), params)
    generation.refresh_from_db()
    return generation


def test_a_conversation_past_the_context_leaves_out_its_oldest_turns_and_answers(chat, tiny):
    answered_turns(chat)
    tokenizer = tiny[0]
    # Room for the last two earlier turns and the 8 new tokens asked for, not for a third.
    kept = prompt_tokens(tokenizer, EARLIER[2:], "Back to the fine-tune")
    assert prompt_tokens(tokenizer, EARLIER[1:], "Back to the fine-tune") > kept + 8
    generation = answer(chat, tiny, "Back to the fine-tune", limit=kept + 8)
    assert (generation.status, generation.error_code, generation.left_out_turns) == ("succeeded", "", 2)
    assert (generation.prompt_tokens, generation.new_tokens, generation.finish_reason) == (kept, 8, "length")

    page = secure_client(chat.owner).get(f"/playground/{chat.pk}/").content.decode()
    assert "the 2 oldest turns were left out to fit the model's context" in page
    _, token = ApiToken.issue(chat.owner, "tests")
    read = call(secure_client(), "GET", f"/playground/generations/{generation.pk}", token=token).json()
    assert read["left_out_turns"] == 2


def test_a_conversation_that_fits_leaves_out_nothing(chat, tiny):
    answered_turns(chat)
    whole = prompt_tokens(tiny[0], EARLIER, "Once more")
    generation = answer(chat, tiny, "Once more", limit=whole + 8)
    assert (generation.status, generation.left_out_turns, generation.prompt_tokens) == ("succeeded", 0, whole)
    assert "left out" not in secure_client(chat.owner).get(f"/playground/{chat.pk}/").content.decode()


def test_only_a_new_message_too_long_alone_fails_and_shows_no_token_line(chat, tiny):
    answered_turns(chat)
    message = "Please read all of this. " * 40
    alone = prompt_tokens(tiny[0], [], message)
    generation = answer(chat, tiny, message, limit=alone)
    assert (generation.status, generation.error_code) == ("failed", "prompt_too_long")
    assert f"Your message with the system prompt is {alone} tokens long" in generation.error_message
    assert f"this model reads at most {alone}" in generation.error_message

    page = secure_client(chat.owner).get(f"/playground/{chat.pk}/").content.decode()
    failed_turn = page[page.index(f'id="turn-{generation.pk}"') :]
    failed_turn = failed_turn[: failed_turn.index("</li>")]
    assert "prompt_too_long" in failed_turn
    assert "0 tokens" not in failed_turn and "model loaded" not in failed_turn


def test_a_conversation_page_leads_back_to_the_playground(chat):
    html = secure_client(chat.owner).get(f"/playground/{chat.pk}/").content.decode()
    assert f'<nav class="crumbs"><a href="/playground/">Playground</a> / conversation #{chat.pk}</nav>' in html
