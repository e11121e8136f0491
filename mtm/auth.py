"""API authentication: a personal bearer token, or the browser's Django session (with CSRF on writes); the staff
checks of API calls and pages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import AuthorizationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from mtm.api_errors import TokenRejected
from mtm.models import ApiToken, hash_token

LAST_USED_RESOLUTION = timedelta(minutes=1)
NEW_TOKEN_HINT = (
    "Create a new token on the portal's API tokens page (/tokens/) and send it as a Bearer token; staff can also "
    "run `python manage.py create_api_token USERNAME`."
)
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class BearerToken(HttpBearer):
    """`Authorization: Bearer mtm_...`: looked up by its SHA-256; a sent but bad token is a 401 that says why."""

    def authenticate(self, request: HttpRequest, token: str) -> Any | None:
        token = token.strip()
        if not token:
            raise TokenRejected(
                "invalid_token", "The Authorization header holds 'Bearer' but no token.", NEW_TOKEN_HINT
            )
        record = ApiToken.objects.select_related("user").filter(token_hash=hash_token(token)).first()
        if record is None:
            raise TokenRejected("invalid_token", "The API token is not valid.", NEW_TOKEN_HINT)
        if record.revoked_at is not None:
            when = record.revoked_at.strftime("%Y-%m-%d %H:%M UTC")
            raise TokenRejected(
                "token_revoked", f"The API token {record.prefix}… was revoked on {when}.", NEW_TOKEN_HINT
            )
        if not record.user.is_active:
            raise TokenRejected(
                "account_disabled",
                f"The account '{record.user.get_username()}' that owns this token is disabled.",
                "Ask staff to re-activate the account.",
            )
        _touch(record)
        request.user = record.user
        return record.user


def _touch(record: ApiToken) -> None:
    """Note the token's use, writing at most once a minute per token."""
    now = timezone.now()
    if record.last_used_at and record.last_used_at >= now - LAST_USED_RESOLUTION:
        return  # the row we just read says it is fresh: no write (an UPDATE takes SQLite's write lock)
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(pk=record.pk).filter(stale).update(last_used_at=now)


class DjangoSession(APIKeyCookie):
    """The logged-in browser session. Unlike ninja's SessionAuth, CSRF is only checked once a user is known,
    so a request with no credentials at all is a 401, not a CSRF 403."""

    param_name: str = settings.SESSION_COOKIE_NAME

    def _get_key(self, request: HttpRequest) -> str | None:
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        exempt = getattr(request, "_ninja_csrf_exempt", False)
        if request.method in UNSAFE_METHODS and not exempt and check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed")
        return user


def _is_staff(user: Any) -> bool:
    return bool(user and user.is_active and user.is_staff)


def require_staff(request: HttpRequest, what: str) -> None:
    """An API call's 403 (JSON) unless the authenticated user is staff. `what` completes "Only staff can ..."."""
    if not _is_staff(request.auth):
        raise AuthorizationError(message=f"Only staff can {what}.")


def require_staff_page(request: HttpRequest, what: str) -> None:
    """A page's 403 unless the signed-in user is staff, with the same message as the API's."""
    if not _is_staff(getattr(request, "user", None)):
        raise PermissionDenied(f"Only staff can {what}.")


api_auth = [BearerToken(), DjangoSession()]
