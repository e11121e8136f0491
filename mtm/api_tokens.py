"""The API tokens of the caller: list, issue (the token is answered once) and revoke. Staff revoke anyone's in the
admin; here, as on the tokens page, someone else's token is "not found"."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema
from ninja.responses import Status
from pydantic import ConfigDict

from mtm.api_errors import ApiError
from mtm.audit import Actor, Channel
from mtm.models import ApiToken
from mtm.token_services import TokenRefused, create_token, revoke_token

router = Router(tags=["tokens"])


class TokenIn(Schema):
    model_config = ConfigDict(strict=True)
    name: str


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str


class TokenErrorOut(Schema):
    detail: str
    errors: list[dict[str, str]]


ERRORS = {status: TokenErrorOut for status in (401, 404, 409, 413, 422)}


def _out(token: ApiToken) -> dict:
    fields = ("id", "name", "prefix", "created_at", "last_used_at", "revoked_at")
    return {name: getattr(token, name) for name in fields}


def _own_token_or_404(request: HttpRequest, token_id: int) -> ApiToken:
    token = ApiToken.objects.filter(pk=token_id, user=request.auth).first() if 0 < token_id < 2**63 else None
    if token is None:
        raise ApiError.single(
            404, "not_found", f"You have no API token #{token_id}.", "List yours with GET /api/v1/tokens."
        )
    return token


@router.get("/tokens", response={200: list[TokenOut], **ERRORS})
def list_tokens(request: HttpRequest) -> list[dict]:
    """Your tokens, newest first (their prefixes only: a token is shown once, when it is issued)."""
    return [_out(t) for t in ApiToken.objects.filter(user=request.auth).order_by("-created_at", "-id")]


@router.post("/tokens", response={201: NewTokenOut, **ERRORS})
def issue_token(request: HttpRequest, payload: TokenIn) -> Status:
    """Issue a token for yourself; `token` in the answer is shown this once and stored only as a hash."""
    try:
        token, raw = create_token(request.auth, payload.name, actor=Actor.of(request, Channel.API))
    except TokenRefused as exc:
        raise ApiError(422, [exc.problem])
    return Status(201, {**_out(token), "token": raw})


@router.post("/tokens/{token_id}/revoke", response={200: TokenOut, **ERRORS})
def revoke(request: HttpRequest, token_id: int) -> dict:
    """Revoke one of your tokens: requests that send it get 401 from now on. 409 when it was already revoked."""
    token = _own_token_or_404(request, token_id)
    if not revoke_token(token, actor=Actor.of(request, Channel.API)):
        raise ApiError.single(
            409, "token_revoked", f"The token {token.prefix}… “{token.name}” was already revoked.", ""
        )
    return _out(token)
