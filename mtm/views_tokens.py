"""The API tokens page: a person's own tokens, a new one shown once, and revoking one."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from mtm.audit import Actor, Channel
from mtm.htmx import HtmxHttpRequest
from mtm.models import ApiToken
from mtm.token_services import TokenRefused, create_token, revoke_token

EXAMPLE_ENDPOINT = "/api/v1/projects/models/available"


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        label="Name",
        help_text="What will use it, e.g. “laptop” or “nightly eval script”, so you can tell your tokens apart.",
        error_messages={"required": "Give the token a name, e.g. the machine or script that will use it."},
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "e.g. laptop"}),
    )


def _page(request: HtmxHttpRequest, form: TokenForm, status: int = 200, **extra: object) -> HttpResponse:
    context = {
        "tokens": ApiToken.objects.filter(user=request.user).order_by("-created_at"),
        "form": form,
        **extra,
    }
    return render(request, "tokens/list.html", context, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
@never_cache
def token_list(request: HtmxHttpRequest) -> HttpResponse:
    """GET lists; POST creates and answers with the page that shows the new token, once (never cached)."""
    if request.method != "POST":
        return _page(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    try:
        token, raw = create_token(request.user, form.cleaned_data["name"], actor=Actor.of(request, Channel.PAGE))
    except TokenRefused as refused:
        form.add_error("name", refused.problem.message)
        return _page(request, form, status=400)
    example_url = request.build_absolute_uri(EXAMPLE_ENDPOINT)
    return _page(request, TokenForm(), status=201, new_token=token, raw_token=raw, example_url=example_url)


@require_http_methods(["POST"])
@login_required
def token_revoke(request: HtmxHttpRequest, token_id: int) -> HttpResponse:
    # Someone else's token is "not found", like one that does not exist: ids reveal nothing. Staff use the admin.
    token = ApiToken.objects.filter(pk=token_id, user=request.user).first()
    if token is None:
        messages.error(request, f"You have no API token #{token_id}: pick one of yours from the list below.")
        return _page(request, TokenForm(), status=404)
    if not revoke_token(token, actor=Actor.of(request, Channel.PAGE)):
        messages.info(request, f"The token {token.prefix}… “{token.name}” was already revoked.")
        return redirect(reverse("tokens:list"))
    messages.success(request, f"Revoked the token {token.prefix}… “{token.name}”. Requests that send it now get 401.")
    return redirect(reverse("tokens:list"))
