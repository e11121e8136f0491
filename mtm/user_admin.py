"""The admin's user pages, audited: who gave or took staff or superuser rights, (de)activated an account, changed
its groups or permissions, or set its password. The password hash itself is never recorded, only that it changed.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest, HttpResponse

from mtm.audit import Actor, Channel, record_change

User = get_user_model()
AUDITED_FIELDS = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")
PASSWORD_CHANGED = "changed"
_BEFORE = "_mtm_user_before"  # the account as it was, kept on the request between save_model and save_related


def user_state(user: Any) -> dict[str, Any]:
    """What the audit compares; the password only as its hash, which never leaves this module."""
    state: dict[str, Any] = {name: getattr(user, name) for name in AUDITED_FIELDS}
    state["password"] = user.password
    state["groups"] = sorted(user.groups.values_list("name", flat=True))
    state["user_permissions"] = sorted(
        f"{app}.{codename}"
        for app, codename in user.user_permissions.values_list("content_type__app_label", "codename")
    )
    return state


def state_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Field -> [old, new] (old None for a new account); the password as "changed", never its value."""
    changes: dict[str, Any] = {}
    for name, new in after.items():
        old = None if before is None else before[name]
        if old == new or (before is None and new in ("", [], False)):
            continue
        changes[name] = PASSWORD_CHANGED if name == "password" else [old, new]
    return changes


class AuditedUserAdmin(UserAdmin):
    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        before = user_state(User.objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        setattr(request, _BEFORE, before)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # groups and permissions are saved here
        user = form.instance
        if changes := state_changes(getattr(request, _BEFORE, None), user_state(user)):
            record_change(Actor.of(request, Channel.ADMIN), "user.update" if change else "user.create", user, changes)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        changes = {name: [value, None] for name, value in user_state(obj).items() if name != "password"}
        record_change(Actor.of(request, Channel.ADMIN), "user.delete", obj, changes)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for user in queryset:
            changes = {name: [value, None] for name, value in user_state(user).items() if name != "password"}
            record_change(Actor.of(request, Channel.ADMIN), "user.delete", user, changes)
        super().delete_queryset(request, queryset)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        user = self.get_object(request, unquote(id))
        before = None if user is None else user.password
        response = super().user_change_password(request, id, form_url)
        if user is not None and request.method == "POST":
            user.refresh_from_db(fields=["password"])
            if user.password != before:
                record_change(
                    Actor.of(request, Channel.ADMIN), "user.password_set", user, {"password": PASSWORD_CHANGED}
                )
        return response


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, AuditedUserAdmin)
