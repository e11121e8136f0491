"""User accounts change through one service whichever the door (admin pages, `create_api_token`, `ensure_admin`):
each change writes one audit record of what changed, the password only as "changed" or "disabled"."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from mtm.models import AuditEvent
from tests.clients import secure_client

PASSWORD = "a-long-pass-1234"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("boss", password=PASSWORD)


def command(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def account_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith="user.").order_by("pk"))


@pytest.mark.django_db
def test_create_api_token_records_a_new_staff_account_once():
    command("create_api_token", "robot", "--create-user", "--staff")
    robot = get_user_model().objects.get(username="robot")
    [event] = account_events()
    assert (event.action, event.object_id, event.via, event.actor) == ("user.create", str(robot.pk), "cli", None)
    assert event.changes == {"username": [None, "robot"], "is_active": [None, True], "is_staff": [None, True]}


@pytest.mark.django_db
def test_create_api_token_records_making_a_member_staff_and_nothing_when_already_staff(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    command("create_api_token", "alice", "--staff")
    command("create_api_token", "alice", "--staff")
    [event] = account_events()
    assert (event.action, event.object_id, event.via) == ("user.update", str(alice.pk), "cli")
    assert event.changes == {"is_staff": [False, True]}


@pytest.mark.django_db
def test_ensure_admin_records_the_superuser_it_creates_without_the_password(monkeypatch):
    monkeypatch.setenv("MTM_ADMIN_PASSWORD", "correct-horse-battery-staple")
    command("ensure_admin")
    admin = get_user_model().objects.get(username="admin")
    [event] = account_events()
    assert (event.action, event.object_id, event.via, event.actor) == ("user.create", str(admin.pk), "cli", None)
    assert event.changes == {
        "username": [None, "admin"],
        "is_active": [None, True],
        "is_staff": [None, True],
        "is_superuser": [None, True],
        "password": "changed",
    }
    assert "correct-horse" not in str(event.changes) and admin.password not in str(event.changes)

    command("ensure_admin")
    assert len(account_events()) == 1


@pytest.mark.django_db
def test_ensure_admin_refuses_an_invalid_username_clearly(monkeypatch):
    monkeypatch.delenv("MTM_ADMIN_PASSWORD", raising=False)
    with pytest.raises(CommandError, match="'bad name!' is not a valid username"):
        command("ensure_admin", "--username", "bad name!")
    assert not get_user_model().objects.exists() and not account_events()


@pytest.mark.django_db
def test_the_admin_records_an_account_without_a_password_and_a_password_disabled(staff):
    client = secure_client(staff)
    resp = client.post("/admin/auth/user/add/", {"username": "sso-only", "usable_password": "false"})
    assert resp.status_code == 302, resp.content.decode()
    created = AuditEvent.objects.get(action="user.create")
    assert (created.actor, created.via) == (staff, "admin")
    assert created.changes == {"username": [None, "sso-only"], "is_active": [None, True]}

    member = get_user_model().objects.create_user("member", password=PASSWORD)
    form = {"usable_password": "false", "unset-password": "1"}
    resp = client.post(f"/admin/auth/user/{member.pk}/password/", form, REMOTE_ADDR="192.0.2.9")
    assert resp.status_code == 302, resp.content.decode()
    member.refresh_from_db()
    assert not member.has_usable_password()
    event = AuditEvent.objects.get(action="user.password_set")
    assert (event.actor, event.object_id, event.via, event.remote_addr) == (staff, str(member.pk), "admin", "192.0.2.9")
    assert event.changes == {"password": "disabled"}


@pytest.mark.django_db
def test_the_admins_bulk_delete_records_each_account(staff, django_user_model):
    users = [django_user_model.objects.create_user(name) for name in ("one", "two")]
    form = {"action": "delete_selected", "_selected_action": [u.pk for u in users], "post": "yes"}
    assert secure_client(staff).post("/admin/auth/user/", form).status_code == 302
    deleted = AuditEvent.objects.filter(action="user.delete", via="admin").order_by("pk")
    assert [e.changes["username"] for e in deleted] == [["one", None], ["two", None]]
    assert not django_user_model.objects.filter(username__in=["one", "two"]).exists()


class StaffChangesTheAccountMeanwhile:
    """A password validator (a Django extension point) that, while a member's new password is being checked, does
    what staff may do at that moment in the admin: take the member's staff rights away and deactivate the account."""

    def validate(self, password: str, user=None) -> None:
        if user is not None:
            get_user_model().objects.filter(pk=user.pk).update(is_staff=False, is_active=False)

    def get_help_text(self) -> str:
        return ""


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "via"), [("/accounts/password/", "web"), ("/admin/password_change/", "admin")])
def test_a_members_own_password_change_writes_only_the_password_and_is_audited(staff, settings, url, via):
    """Through the account service: the member's change of her own password keeps what staff changed on her account
    meanwhile (a form that saves the whole account would make her staff and active again), and is audited once,
    the password only as "changed"."""
    settings.AUTH_PASSWORD_VALIDATORS = [{"NAME": f"{__name__}.StaffChangesTheAccountMeanwhile"}]
    new = "a-newer-pass-5678"
    form = {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    resp = secure_client(staff).post(url, form, REMOTE_ADDR="192.0.2.10")
    assert resp.status_code == 302, resp.content.decode()
    staff.refresh_from_db()
    assert staff.check_password(new)
    assert (staff.is_staff, staff.is_active) == (False, False)  # what staff did meanwhile stays
    [event] = AuditEvent.objects.filter(object_id=str(staff.pk), action__contains="password")
    assert (event.action, event.actor, event.via, event.remote_addr) == (
        "password_change.succeeded",
        staff,
        via,
        "192.0.2.10",
    )
    assert event.changes == {"password": "changed"} and staff.password not in str(event.changes)
