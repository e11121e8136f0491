"""The password doors, throttled: the portal's and the admin's login and password-change forms share one rule
(mtm/throttle.py) and one count, so a stolen session cannot guess the password through the change form either.

Each try is counted before its password is checked; while a wait is in force the try is refused unchecked, answered
429 with Retry-After, and the first refusal of each wait is audited. The address is the client's
(mtm/client_address.py: a trusted proxy's X-Forwarded-For), so a team behind one proxy is told apart.
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
from mtm.account_services import change_own_password
from mtm.audit import Actor, Channel
from mtm.client_address import client_address

THROTTLED = "throttled"


def _counted_try(form: Any, user: Any, username: str, address: str | None, action: str) -> throttle.Admission:
    """Count the try, or refuse it unchecked (ValidationError THROTTLED; `form.retry_after` set for the view)."""
    admitted = throttle.admit(username, address)
    if isinstance(admitted, throttle.Admission):
        return admitted
    if admitted.first:
        changes = {"waits_for": [None, admitted.waits_for], "wait_seconds": [None, int(admitted.wait.total_seconds())]}
        audit.record_change(Actor(user, form.via, address), f"{action}.throttled", admitted.row, changes)
    form.retry_after = admitted.retry_after()
    raise ValidationError(admitted.message(), code=THROTTLED)


def _refused_response(form: Form, response: HttpResponse, field: str) -> HttpResponse:
    if form.has_error(field, THROTTLED):
        response.status_code = 429
        response["Retry-After"] = str(getattr(form, "retry_after", 1))
    return response


class ThrottledLoginMixin:
    """For AuthenticationForm subclasses: count each try before its password is checked, refuse while waiting."""

    via = Channel.PAGE

    def clean(self) -> dict[str, Any]:
        form: Any = self
        username = form.cleaned_data.get("username") or ""
        password = form.cleaned_data.get("password") or ""
        if not (username and password):
            return super().clean()  # type: ignore[misc]  # no password is checked without both
        address = client_address(form.request)
        admission = _counted_try(form, None, username, address, "login")
        try:
            cleaned = super().clean()  # type: ignore[misc]
        except ValidationError as wrong:
            if form.user_cache is None:
                throttle.failed(admission)
                actor = Actor(None, self.via, address)
                audit.record_change(actor, "login.failed", admission.account_row or admission.address_row)
                if (waiting := throttle.refusal(username, address)) is not None:
                    raise ValidationError([*wrong.error_list, ValidationError(waiting.after_failure())]) from None
            else:  # a right password for an account that may not use this door is no guess
                throttle.not_a_guess(admission)
            raise
        throttle.succeeded(admission)
        audit.record_change(Actor(form.user_cache, self.via, address), "login.succeeded", form.user_cache)
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
        return _refused_response(form, super().form_invalid(form), "__all__")


class ThrottledPasswordChangeMixin:
    """For PasswordChangeForm subclasses: the old password is a password guess like a sign-in, counted the same."""

    via = Channel.PAGE

    def __init__(self, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        form: Any = self
        address = client_address(self.request)
        admission = _counted_try(form, form.user, form.user.get_username(), address, "password_change")
        try:
            old_password = super().clean_old_password()  # type: ignore[misc]
        except ValidationError:
            throttle.failed(admission)
            audit.record_change(
                Actor(form.user, self.via, address), "password_change.failed", admission.account_row or form.user
            )
            raise
        throttle.succeeded(admission)
        return old_password

    def save(self, commit: bool = True) -> Any:
        """Through the account service: only the password is written, with its audit record."""
        form: Any = self
        if commit:
            actor = Actor(form.user, self.via, client_address(self.request))
            change_own_password(form.user, form.cleaned_data["new_password1"], actor=actor)
        else:
            form.user.set_password(form.cleaned_data["new_password1"])
        return form.user


class ThrottledPasswordChangeForm(ThrottledPasswordChangeMixin, PasswordChangeForm):
    via = Channel.PAGE


class ThrottledAdminPasswordChangeForm(ThrottledPasswordChangeMixin, AdminPasswordChangeForm):
    via = Channel.ADMIN


class ThrottledPasswordChangeView(PasswordChangeView):
    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def form_invalid(self, form: Form) -> HttpResponse:
        return _refused_response(form, super().form_invalid(form), "old_password")


def admin_password_change(request: HttpRequest) -> HttpResponse:
    """The admin's own password-change page (AdminSite.password_change) with the throttled form."""
    request.current_app = admin.site.name
    return ThrottledPasswordChangeView.as_view(
        form_class=ThrottledAdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done", current_app=admin.site.name),
        extra_context=admin.site.each_context(request),
    )(request)


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's own login page (AdminSite.login, with the throttled form): a refusal answers 429 with Retry-After,
    as the portal's login page does."""
    response = admin.site.login(request)
    form = (getattr(response, "context_data", None) or {}).get("form")
    return _refused_response(form, response, "__all__") if isinstance(form, Form) else response
