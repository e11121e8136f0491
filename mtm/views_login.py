"""The password doors, throttled: the portal's and the admin's login and password-change forms share one rule
(mtm/throttle.py) and one count, so a stolen session cannot guess the password through the change form either.

A locked-out account or address is refused before the password is checked, so guessing gains nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm, AdminPasswordChangeForm
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.contrib.auth.views import LoginView, PasswordChangeView
from django.core.exceptions import ValidationError
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from mtm import audit, throttle
from mtm.audit import Channel

THROTTLED = "throttled"


class ThrottledLoginMixin:
    """For AuthenticationForm subclasses: refuse while locked out, and note every password that was checked."""

    via = Channel.PAGE

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
    via = Channel.PAGE


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    via = Channel.ADMIN


class ThrottledLoginView(LoginView):
    """Django's LoginView with the throttled form; a refusal answers 429 so scripts can tell it apart."""

    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form: Form) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error("__all__", THROTTLED):
            response.status_code = 429
        return response


class ThrottledPasswordChangeMixin:
    """For PasswordChangeForm subclasses: the old password is a password guess like a sign-in, counted the same."""

    via = Channel.PAGE

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        form: Any = self
        username = form.user.get_username()
        addr = audit.remote_addr(self.request)
        if (lock := throttle.lockout(username, addr)) is not None:
            raise ValidationError(lock.message(), code=THROTTLED)
        try:
            old_password = super().clean_old_password()  # type: ignore[misc]
        except ValidationError:
            attempt = throttle.note_attempt(username, addr, succeeded=False)
            audit.record(form.user, "password_change.failed", attempt, request=self.request, via=self.via)
            raise
        throttle.note_attempt(username, addr, succeeded=True)
        return old_password


class ThrottledPasswordChangeForm(ThrottledPasswordChangeMixin, PasswordChangeForm):
    via = Channel.PAGE


class ThrottledAdminPasswordChangeForm(ThrottledPasswordChangeMixin, AdminPasswordChangeForm):
    via = Channel.ADMIN


class ThrottledPasswordChangeView(PasswordChangeView):
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_valid(self, form: Form) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user  # type: ignore[attr-defined]
        audit.record(user, "password_change.succeeded", user, {"password": "changed"}, self.request, form.via)  # type: ignore[attr-defined]
        return response

    def form_invalid(self, form: Form) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error("old_password", THROTTLED):
            response.status_code = 429
        return response


def admin_password_change(request: HttpRequest) -> HttpResponse:
    """The admin's own password-change page (AdminSite.password_change) with the throttled form."""
    request.current_app = admin.site.name
    return ThrottledPasswordChangeView.as_view(
        form_class=ThrottledAdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done", current_app=admin.site.name),
        extra_context=admin.site.each_context(request),
    )(request)
