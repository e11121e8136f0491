"""The playground pages: pick a model, chat with it, watch the answer grow (the live turn is an HTMX-polled partial
that stops polling, 286, once the answer has ended). Only the owner sees a conversation; anyone else gets a 404."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from models_registry.demo import DEMO_MODEL_NAME, DEMO_NOTE, is_demo_model
from models_registry.lookup import available_models
from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest, wants_partial
from mtm.shared.problems import Problem
from playground import chat_form, services
from playground.models import Conversation
from playground.params import GenerationParams
from projects.models import RunStatus, TrainingRun
from projects.runs.views import polled_partial


def _refusal(request: HtmxHttpRequest, problem: Problem) -> None:
    hint = format_html(' <span class="hint">{}</span>', problem.hint) if problem.hint else ""
    messages.error(request, format_html("<strong>{}</strong>{}", problem.message, hint))


def _own(request: HtmxHttpRequest, pk: int) -> Conversation:
    conversation = services.conversation_of(request.user, pk)
    if conversation is None:
        raise Http404(f"No conversation with id {pk}.")
    return conversation


@require_http_methods(["GET", "HEAD"])
@login_required
def index(request: HtmxHttpRequest) -> HttpResponse:
    runs = (
        TrainingRun.objects.filter(status=RunStatus.SUCCEEDED)
        .select_related("project", "project__owner")
        .order_by("-finished_at", "-id")[:100]
    )
    _, models = available_models(valid=True)
    context = {
        "conversations": Conversation.objects.filter(owner=request.user).select_related("run")[:100],
        "runs": runs,
        "models": models,
        "chosen_run": request.GET.get("run", ""),
        "chosen_model": request.GET.get("model", ""),
        "demo_model_name": DEMO_MODEL_NAME,
    }
    return render(request, "playground/index.html", context)


@require_http_methods(["POST"])
@login_required
def new_conversation(request: HtmxHttpRequest) -> HttpResponse:
    target = request.POST.get("target", "")
    kind, _, value = target.partition(":")
    run_id = int(value) if kind == "run" and value.isdigit() and len(value) < 19 else None
    model_name = value.strip() if kind == "model" else ""
    try:
        if kind == "run" and run_id is None:
            raise services.Refused(Problem("no_target", f"'{value[:40]}' is not a run id."))
        conversation = services.start_conversation(
            actor=Actor.of(request, Channel.PAGE),
            run_id=run_id,
            model_name=model_name,
            system_prompt=request.POST.get("system_prompt", ""),
        )
    except services.Refused as exc:
        _refusal(request, exc.problem)
        return redirect("playground:index")
    return redirect("playground:conversation", pk=conversation.pk)


def _form_context(conversation: Conversation, values: dict[str, str]) -> dict[str, Any]:
    return {
        "conversation": conversation,
        "form": values,
        "settings_summary": chat_form.summary_of(values),
        "max_tokens_limit": settings.MTM_PLAYGROUND_MAX_NEW_TOKENS,
        "demo_note": DEMO_NOTE if is_demo_model(conversation.model_name) else "",
    }


@require_http_methods(["GET", "HEAD"])
@login_required
def conversation(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    chat = _own(request, pk)
    turns = list(chat.turns.order_by("pk"))
    last = GenerationParams.model_validate(turns[-1].params) if turns else GenerationParams()
    values = chat_form.kept(request.session.pop(_draft_key(chat.pk), None), chat_form.shown_for(last))
    return render(request, "playground/conversation.html", {"turns": turns, **_form_context(chat, values)})


def _draft_key(pk: int) -> str:
    return f"playground-draft-{pk}"


def _refused_send(request: HtmxHttpRequest, chat: Conversation, problem: Problem) -> HttpResponse:
    """The form again with what the member typed: swapped in place for HTMX (with the refusal in it), else kept in
    the session for the page the redirect shows (with the refusal on top)."""
    typed = chat_form.typed(request.POST)
    if wants_partial(request):
        context = {**_form_context(chat, typed), "refusal": problem}
        return render(request, "playground/conversation.html#chat_form", context)
    _refusal(request, problem)
    request.session[_draft_key(chat.pk)] = typed
    return redirect("playground:conversation", pk=chat.pk)


@require_http_methods(["POST"])
@login_required
@vary_on_headers("HX-Request")
def send(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    chat = _own(request, pk)
    params, problems = chat_form.parsed(request.POST)
    if problems:
        return _refused_send(request, chat, Problem("invalid_params", " ".join(problems)))
    try:
        services.send_message(chat, request.POST.get("message", ""), params, actor=Actor.of(request, Channel.PAGE))
    except services.Refused as exc:
        return _refused_send(request, chat, exc.problem)
    if wants_partial(request):
        return HttpResponseClientRedirect(reverse("playground:conversation", kwargs={"pk": chat.pk}))
    return redirect("playground:conversation", pk=chat.pk)


@require_http_methods(["POST"])
@login_required
def delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    chat = _own(request, pk)
    services.delete_conversation(chat, actor=Actor.of(request, Channel.PAGE))
    messages.success(request, "The conversation is deleted.")
    return redirect("playground:index")


@require_http_methods(["GET", "HEAD"])
@login_required
@vary_on_headers("HX-Request")
def turn(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    generation = services.generation_of(request.user, pk)
    if generation is None:
        raise Http404(f"No generation with id {pk}.")
    context = {"turn": generation, "conversation": generation.conversation}
    if wants_partial(request):
        return polled_partial(request, "playground/conversation.html#turn", context, live=generation.is_live)
    return redirect("playground:conversation", pk=generation.conversation_id)
