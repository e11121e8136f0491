"""The password doors, throttled: the portal's login page and the admin's login form share one rule (mtm/throttle.py).

A locked-out account or address is refused before the password is checked, so guessing gains nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpResponse

from mtm import audit, throttle

THROTTLED = "throttled"


class ThrottledLoginMixin:
    """For AuthenticationForm subclasses: refuse while locked out, and note every password that was checked."""

    via = "web"

    def clean(self) -> dict[str, Any]:
        form: Any = self
        username = form.cleaned_data.get("username") or ""
        password = form.cleaned_data.get("password") or ""
        addr = audit.remote_addr(form.request)
        if (lock := throttle.lockout(username, addr)) is not None:
            raise ValidationError(lock.message(), code=THROTTLED)
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except ValidationError:
            # Only a wrong password counts; a right one for an account that may not use this door does not.
            if username and password and form.user_cache is None:
                attempt = throttle.note_attempt(username, addr, succeeded=False)
                audit.record(None, "login.failed", attempt, request=form.request, via=self.via)
            raise
        if username and password:
            throttle.note_attempt(username, addr, succeeded=True)
            audit.record(form.user_cache, "login.succeeded", form.user_cache, request=form.request, via=self.via)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    via = "web"


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    via = "admin"


class ThrottledLoginView(LoginView):
    """Django's LoginView with the throttled form; a refusal answers 429 so scripts can tell it apart."""

    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Form) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error("__all__", THROTTLED):
            response.status_code = 429
        return response
