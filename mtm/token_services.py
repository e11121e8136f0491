"""Issuing and revoking personal API tokens: the one way in for the tokens page, the API, the admin and
`manage.py create_api_token`. The name check, the lock and the audit record are the same whatever the channel."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from mtm import audit
from mtm.audit import Actor
from mtm.models import ApiToken
from mtm.shared.problems import Problem

NAME_MAX = ApiToken._meta.get_field("name").max_length


class TokenRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def name_problem(name: str) -> Problem | None:
    if not name.strip():
        return Problem(
            "name_required",
            "Give the token a name, e.g. the machine or script that will use it.",
            "A name tells your tokens apart, e.g. “laptop” or “nightly eval script”.",
        )
    if len(name) > NAME_MAX:
        return Problem("name_too_long", f"The name is {len(name)} characters; at most {NAME_MAX} characters.", "")
    if "\x00" in name:
        return Problem("invalid_name", "The name contains a NUL character.", "Remove it.")
    return None


def create_token(user, name: str, *, actor: Actor) -> tuple[ApiToken, str]:
    """Issue a token for `user` (the actor's own, or any user's from the command line). Returns the row and the
    token itself, which is stored hashed and never shown again."""
    name = name.strip()
    if problem := name_problem(name):
        raise TokenRefused(problem)
    with transaction.atomic():
        token, raw = ApiToken.issue(user, name)
        audit.record_change(actor, "api_token.create", token, {"name": [None, token.name]})
    return token, raw


def revoke_token(token: ApiToken, *, actor: Actor) -> bool:
    """Revoke the token; False (and nothing recorded) when it had already been revoked."""
    with transaction.atomic():
        now = timezone.now()
        if not ApiToken.objects.select_for_update().filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
            token.refresh_from_db()
            return False
        token.revoked_at = now
        audit.record_change(actor, "api_token.revoke", token, {"revoked_at": [None, now.isoformat()]})
    return True
