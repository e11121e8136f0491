"""Creating, changing and deleting user accounts: the one way in for the admin's user pages, `create_api_token`,
`ensure_admin` and a member's change of their own password. Each function takes the Actor, writes the account and one audit record of what changed. A password
is recorded only as "changed" or "disabled", never its hash.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from mtm import audit
from mtm.audit import Actor
from mtm.shared.problems import Problem

AUDITED_FIELDS = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser")
PASSWORD_CHANGED = "changed"
PASSWORD_DISABLED = "disabled"


class AccountRefused(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


def username_problem(username: str) -> Problem | None:
    """Why `username` cannot name a new account, or None."""
    User = get_user_model()
    if "\x00" in username:
        return Problem("invalid_username", "The username contains a NUL character.", "Remove it.")
    field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        if not username:
            raise ValidationError("it is empty.")
        field.run_validators(username)
    except ValidationError as exc:
        return Problem(
            "invalid_username",
            f"'{username}' is not a valid username: {' '.join(exc.messages)}",
            f"Use 1 to {field.max_length} letters, digits and @ . + - _ characters.",
        )
    if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
        return _taken(username)
    return None


def account_state(user: Any) -> dict[str, Any]:
    """What the audit compares; the password only as its hash, which `state_changes` never lets out."""
    state: dict[str, Any] = {name: getattr(user, name) for name in AUDITED_FIELDS}
    state["password"] = user.password
    if user.pk is not None:
        state["groups"] = sorted(user.groups.values_list("name", flat=True))
        state["user_permissions"] = sorted(
            f"{app}.{codename}"
            for app, codename in user.user_permissions.values_list("content_type__app_label", "codename")
        )
    return state


def state_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """Field -> [old, new] (old None for a new account); the password as "changed" or "disabled", never its value."""
    changes: dict[str, Any] = {}
    for name, new in after.items():
        old = None if before is None else before.get(name)
        if name == "password":
            if old != new and (before is not None or _usable(new)):
                changes[name] = PASSWORD_CHANGED if _usable(new) else PASSWORD_DISABLED
        elif old != new and not (before is None and new in ("", [], False)):
            changes[name] = [old, new]
    return changes


def create_account(
    username: str, *, actor: Actor, password: str | None = None, is_staff: bool = False, is_superuser: bool = False
) -> Any:
    """Create a user; without a password it cannot sign in with one (a token or an admin's reset gives it a way)."""
    User = get_user_model()
    user = User(
        **{User.USERNAME_FIELD: User.normalize_username(username)}, is_staff=is_staff, is_superuser=is_superuser
    )
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    return add_account(user, actor=actor)


def add_account(user: Any, *, actor: Actor) -> Any:
    """Save a user built but not yet saved (`create_account` builds one, and so does the admin's add form)."""
    if problem := username_problem(user.get_username()):
        raise AccountRefused(problem)
    try:
        with transaction.atomic():
            user.save()
            audit.record_change(actor, "user.create", user, state_changes(None, account_state(user)))
    except IntegrityError:  # a concurrent creation of the same name
        raise AccountRefused(_taken(user.get_username())) from None
    return user


def update_account(
    user: Any,
    *,
    actor: Actor,
    is_staff: bool | None = None,
    is_active: bool | None = None,
    is_superuser: bool | None = None,
    groups: Any = None,
    permissions: Any = None,
) -> dict[str, Any]:
    """Save `user` with the flags given (None keeps one as it is) and whatever its edit form already set on it,
    and its groups and permissions when given. Returns what changed; nothing is recorded when nothing did."""
    flags = {"is_staff": is_staff, "is_active": is_active, "is_superuser": is_superuser}
    with transaction.atomic():
        before = account_state(type(user)._default_manager.select_for_update().get(pk=user.pk))
        for name, value in flags.items():
            if value is not None:
                setattr(user, name, value)
        user.save()
        if groups is not None:
            user.groups.set(groups)
        if permissions is not None:
            user.user_permissions.set(permissions)
        if changes := state_changes(before, account_state(user)):
            audit.record_change(actor, "user.update", user, changes)
    return changes


def set_password(user: Any, password: str | None, *, actor: Actor) -> None:
    """Set the user's password (staff, for another account); None disables signing in with one."""
    _save_password(user, password, actor=actor, action="user.password_set")


def change_own_password(user: Any, password: str, *, actor: Actor) -> None:
    """A member's change of their own password, after the form checked the old one. Only the password is written:
    a change of the account that staff made meanwhile (deactivated, no longer staff) stays."""
    _save_password(user, password, actor=actor, action="password_change.succeeded")


def _save_password(user: Any, password: str | None, *, actor: Actor, action: str) -> None:
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(password)
    with transaction.atomic():
        user.save(update_fields=["password"])
        changes = {"password": PASSWORD_CHANGED if password is not None else PASSWORD_DISABLED}
        audit.record_change(actor, action, user, changes)


def delete_account(user: Any, *, actor: Actor) -> None:
    with transaction.atomic():
        changes = {name: [value, None] for name, value in account_state(user).items() if name != "password"}
        audit.record_change(actor, "user.delete", user, changes)
        user.delete()


def _usable(password_hash: str | None) -> bool:
    return bool(password_hash) and not password_hash.startswith(UNUSABLE_PASSWORD_PREFIX)


def _taken(username: str) -> Problem:
    return Problem(
        "username_taken", f"A user named '{username}' exists already.", "Choose another name, or change that user."
    )
