"""The admin's user pages, saving through mtm.account_services: creating, editing (flags, groups, permissions),
deleting and setting a password are each audited there, with the admin as the channel."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from mtm import account_services
from mtm.audit import Actor, Channel

User = get_user_model()
# Django's password view builds and saves its form without the request; the view hands the form its actor here.
_password_actor: ContextVar[Actor] = ContextVar("password_actor")


class AuditedPasswordChangeForm(AdminPasswordChangeForm):
    def save(self, commit: bool = True) -> Any:
        if not commit:
            return super().save(commit=False)
        password = self.cleaned_data["password1"] if self.cleaned_data["set_usable_password"] else None
        account_services.set_password(self.user, password, actor=_password_actor.get())
        return self.user


class AuditedUserAdmin(UserAdmin):
    change_password_form = AuditedPasswordChangeForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        actor = Actor.of(request, Channel.ADMIN)
        if not change:
            account_services.add_account(obj, actor=actor)
            return
        data = form.cleaned_data
        account_services.update_account(
            obj, actor=actor, groups=data.get("groups"), permissions=data.get("user_permissions")
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # save_model saved the groups and permissions with the account, in its one audit record.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        account_services.delete_account(obj, actor=Actor.of(request, Channel.ADMIN))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        actor = Actor.of(request, Channel.ADMIN)
        with transaction.atomic():
            for user in queryset:
                account_services.delete_account(user, actor=actor)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        token = _password_actor.set(Actor.of(request, Channel.ADMIN))
        try:
            return super().user_change_password(request, id, form_url)
        finally:
            _password_actor.reset(token)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
