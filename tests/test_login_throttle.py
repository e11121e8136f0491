"""Sign-in throttling under attack: forty wrong passwords at once, a stranger guessing a named account to lock its
owner out, a forged X-Forwarded-For, and a team behind one proxy. Every password form (portal and admin sign-in,
the password-change forms) counts a try before it checks the password, per account and address, and answers a
growing wait (429, Retry-After) instead of a lockout anyone could trigger."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.models import F
from django.test import RequestFactory
from django.utils import timezone

from mtm.models import AuditEvent
from tests.clients import secure_client

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
PASSWORD = "a-long-pass-1234"
ALICE_ADDR = "198.51.100.7"
STRANGER_ADDR = "203.0.113.66"
PROXY = "10.0.0.1"
REPO = Path(__file__).resolve().parent.parent


class OverlappingPBKDF2(PBKDF2PasswordHasher):
    """A real PBKDF2, slow enough that forty checks sent at once overlap as they do in production (the hash runs
    outside the GIL), fast enough for a test."""

    iterations = 60_000


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD)


def text(response) -> str:
    return response.content.decode()


def sign_in(client, username: str, password: str, addr: str, url: str = LOGIN, **headers: str):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=addr, headers=headers)


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def checked_passwords() -> int:
    """How many wrong passwords were checked: each check that fails is audited once, a refusal never is."""
    return AuditEvent.objects.filter(action="login.failed").count()


def wind_back(seconds: float, **pair: str) -> None:
    """Move the stored time of the pair's last failure into the past, as if the wait had passed."""
    from mtm.models import SignInThrottle

    moved = SignInThrottle.objects.filter(**pair).update(
        last_failure_at=F("last_failure_at") - timedelta(seconds=seconds)
    )
    assert moved == 1


# --- the count holds under parallel tries ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_forty_wrong_passwords_at_once_check_at_most_the_limit(settings, django_user_model):
    """The attack: forty wrong passwords sent at once were all checked, since each try was counted only after its
    check. Counted first, under a lock, only the first MTM_LOGIN_MAX_FAILURES reach the password check."""
    settings.PASSWORD_HASHERS = [f"{__name__}.OverlappingPBKDF2"]
    django_user_model.objects.create_user("alice", password=PASSWORD)
    tries = 40
    start = threading.Barrier(tries)
    statuses: list[int] = []

    def guess(n: int) -> None:
        try:
            client = secure_client()
            start.wait(60)
            statuses.append(sign_in(client, "alice", f"guess-{n}", addr=STRANGER_ADDR).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(tries)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    limit = django_settings.MTM_LOGIN_MAX_FAILURES
    assert checked_passwords() == limit
    assert sorted(statuses) == [200] * limit + [429] * (tries - limit)


# --- a stranger cannot lock the owner out ------------------------------------------------------------------------


def test_a_strangers_failures_do_not_refuse_alices_password_from_her_address(alice):
    """The attack: twenty wrong passwords for 'alice' from anywhere refused alice's right one for 15 minutes."""
    stranger = secure_client()
    for n in range(20):
        sign_in(stranger, "alice", f"guess-{n}", addr=STRANGER_ADDR)
    assert sign_in(stranger, "alice", PASSWORD, addr=STRANGER_ADDR).status_code == 429  # the stranger waits
    own = secure_client()
    assert sign_in(own, "alice", PASSWORD, addr=ALICE_ADDR).status_code == 302 and signed_in(own)
    assert checked_passwords() == django_settings.MTM_LOGIN_MAX_FAILURES


def test_a_team_behind_its_trusted_proxy_is_told_apart_and_one_guesser_does_not_block_the_rest(settings, alice):
    from mtm.env import parse_networks

    settings.MTM_TRUSTED_PROXIES = parse_networks("MTM_TRUSTED_PROXIES", PROXY)
    stranger = secure_client()
    for n in range(10):
        sign_in(stranger, "alice", f"guess-{n}", addr=PROXY, x_forwarded_for=STRANGER_ADDR)
    assert sign_in(stranger, "alice", PASSWORD, addr=PROXY, x_forwarded_for=STRANGER_ADDR).status_code == 429
    own = secure_client()
    assert sign_in(own, "alice", PASSWORD, addr=PROXY, x_forwarded_for=ALICE_ADDR).status_code == 302
    # The audit names the person's address, not the proxy's.
    failed = AuditEvent.objects.filter(action="login.failed").values_list("remote_addr", flat=True)
    assert set(failed) == {STRANGER_ADDR}
    assert AuditEvent.objects.get(action="login.succeeded").remote_addr == ALICE_ADDR


# --- which address counts --------------------------------------------------------------------------------------


def test_x_forwarded_for_is_ignored_without_trusted_proxies(settings, alice):
    """Without MTM_TRUSTED_PROXIES a client that writes its own X-Forwarded-For still counts under its own address:
    a new made-up address per try does not buy new tries."""
    settings.MTM_TRUSTED_PROXIES = ()
    client = secure_client()
    for n in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        sign_in(client, "alice", f"guess-{n}", addr=STRANGER_ADDR, x_forwarded_for=f"192.0.2.{n + 1}")
    resp = sign_in(client, "alice", "another", addr=STRANGER_ADDR, x_forwarded_for="192.0.2.200")
    assert resp.status_code == 429 and checked_passwords() == django_settings.MTM_LOGIN_MAX_FAILURES
    assert set(AuditEvent.objects.values_list("remote_addr", flat=True)) == {STRANGER_ADDR}


def request_from(peer: str, forwarded: str | None = None):
    headers = {} if forwarded is None else {"x_forwarded_for": forwarded}
    return RequestFactory().post(LOGIN, REMOTE_ADDR=peer, headers=headers)


def test_the_client_address_walks_x_forwarded_for_from_the_right_through_trusted_proxies_only(settings):
    from mtm.client_address import client_address
    from mtm.env import parse_networks

    settings.MTM_TRUSTED_PROXIES = ()
    assert client_address(request_from(PROXY, "192.0.2.9")) == PROXY  # nobody is trusted
    settings.MTM_TRUSTED_PROXIES = parse_networks("MTM_TRUSTED_PROXIES", f"{PROXY}:172.16.0.0/12")
    assert client_address(request_from(PROXY, ALICE_ADDR)) == ALICE_ADDR
    # What the client wrote itself sits left of what the proxy appended: it is never reached.
    assert client_address(request_from(PROXY, f"6.6.6.6, {ALICE_ADDR}")) == ALICE_ADDR
    # Through two trusted proxies, the first untrusted hop from the right is the person.
    assert client_address(request_from(PROXY, f"6.6.6.6, {ALICE_ADDR}, 172.16.3.4")) == ALICE_ADDR
    # A peer that is not a trusted proxy is the client, whatever it says.
    assert client_address(request_from("192.0.2.50", ALICE_ADDR)) == "192.0.2.50"
    # Nothing forwarded, or a hop that is no address: the last address known for sure.
    assert client_address(request_from(PROXY)) == PROXY
    assert client_address(request_from(PROXY, f"{ALICE_ADDR}, not-an-ip")) == PROXY
    assert client_address(request_from(PROXY, "[2001:db8::7]:4431")) == "2001:db8::7"
    assert client_address(request_from(PROXY, "198.51.100.8:5123")) == "198.51.100.8"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("10.0.0.1", ["10.0.0.1/32"]),
        ("10.0.0.1:192.168.0.0/16", ["10.0.0.1/32", "192.168.0.0/16"]),
        (" 10.0.0.1 , ::1,fd00::/8 ", ["10.0.0.1/32", "::1/128", "fd00::/8"]),
    ],
)
def test_trusted_proxies_are_read_as_addresses_and_networks(raw, expected):
    from mtm.env import parse_networks

    assert [str(n) for n in parse_networks("MTM_TRUSTED_PROXIES", raw)] == expected


@pytest.mark.parametrize("raw", ["10.0.0.300", "proxy.internal", "10.0.0.0/33", "10.0.0.1;10.0.0.2", "*"])
def test_a_bad_trusted_proxy_is_refused_with_its_name(raw):
    from mtm.env import parse_networks

    with pytest.raises(ImproperlyConfigured) as refused:
        parse_networks("MTM_TRUSTED_PROXIES", raw)
    assert "MTM_TRUSTED_PROXIES" in str(refused.value) and "is not an IP address or network" in str(refused.value)


def test_the_portal_does_not_start_with_a_bad_trusted_proxy():
    env = {"PATH": "/usr/bin:/bin", "MTM_TRUSTED_PROXIES": "10.0.0.1:gateway", "DJANGO_SETTINGS_MODULE": "mtm.settings"}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert started.returncode != 0
    assert "MTM_TRUSTED_PROXIES" in started.stderr and "'gateway' is not an IP address or network" in started.stderr


# --- the wait grows, is said, and is audited --------------------------------------------------------------------


def test_the_wait_grows_and_is_said_with_retry_after_without_checking_the_password(alice):
    limit = django_settings.MTM_LOGIN_MAX_FAILURES
    client = secure_client()
    for n in range(limit):
        assert sign_in(client, "alice", f"guess-{n}", addr=STRANGER_ADDR).status_code == 200
    for _ in range(4):
        refused = sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR)  # even the right one is not checked
        assert refused.status_code == 429 and not signed_in(client)
        wait = waits()[-1]
        left = int(refused["Retry-After"])
        assert 0 < left <= wait
        assert f"Wait {left} seconds" in text(refused) or f"Wait {-(-left // 60)} minutes" in text(refused)
        wind_back(wait, account="alice", address=STRANGER_ADDR)
        assert sign_in(client, "alice", "one-more-guess", addr=STRANGER_ADDR).status_code == 200
    assert waits() == [30, 60, 120, 240]
    assert checked_passwords() == limit + 4
    message = text(sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR)).replace("&#x27;", "'")
    assert "Too many failed sign-in attempts for 'alice' from your address" in message
    assert "ask a staff member of your team to reset it" in message


def test_the_failure_that_starts_a_wait_says_so_and_the_refusal_says_the_password_was_not_checked(alice):
    client = secure_client()
    limit = django_settings.MTM_LOGIN_MAX_FAILURES
    for n in range(limit - 1):
        assert "your next try is checked in" not in text(sign_in(client, "alice", f"typo-{n}", addr=ALICE_ADDR))
    last = text(sign_in(client, "alice", "one-typo-too-many", addr=ALICE_ADDR))
    assert "Please enter a correct username and password" in last
    assert "your next try is checked in 30 seconds" in last
    refused = text(sign_in(client, "alice", PASSWORD, addr=ALICE_ADDR))
    assert "so this try was not checked" in refused


def waits() -> list[int]:
    """The whole wait each audited refusal was told (from the last failure), oldest first."""
    events = AuditEvent.objects.filter(action="login.throttled").order_by("at", "pk")
    return [event.changes["wait_seconds"][1] for event in events]


def test_the_wait_stops_growing_at_the_longest_delay_and_failures_are_forgotten_slowly(alice):
    from mtm import throttle
    from mtm.models import SignInThrottle

    now = timezone.now()
    longest = django_settings.MTM_LOGIN_MAX_DELAY_MINUTES * 60
    SignInThrottle.objects.create(account="alice", address=STRANGER_ADDR, failures=40, last_failure_at=now)
    refusal = throttle.refusal("alice", STRANGER_ADDR, now=now)
    assert refusal is not None and refusal.retry_after(now) == longest
    assert throttle.refusal("alice", STRANGER_ADDR, now=now + timedelta(seconds=longest)) is None
    # One failure is forgotten per longest delay: a day later the pair is no longer waiting at all.
    SignInThrottle.objects.filter(account="alice").update(failures=django_settings.MTM_LOGIN_MAX_FAILURES + 2)
    later = now + timedelta(seconds=3 * longest)
    admitted = throttle.admit("alice", STRANGER_ADDR, now=later)
    assert not isinstance(admitted, throttle.Refusal)
    row = SignInThrottle.objects.get(account="alice", address=STRANGER_ADDR)
    assert row.failures == django_settings.MTM_LOGIN_MAX_FAILURES  # 7 - 3 forgotten + this try
    assert throttle.refusal("alice", STRANGER_ADDR, now=later).retry_after(later) == 30


def test_throttled_refusals_are_audited_once_per_wait(alice):
    client = secure_client()
    for n in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        sign_in(client, "alice", f"guess-{n}", addr=STRANGER_ADDR)
    for _ in range(5):
        assert sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR).status_code == 429
    [event] = AuditEvent.objects.filter(action="login.throttled")
    assert event.remote_addr == STRANGER_ADDR and event.actor is None and "'alice'" in event.object_repr
    assert event.changes["wait_seconds"][1] == 30 and event.changes["waits_for"][1] == "account"
    wind_back(30, account="alice", address=STRANGER_ADDR)
    sign_in(client, "alice", "guess-again", addr=STRANGER_ADDR)
    sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR)
    assert AuditEvent.objects.filter(action="login.throttled").count() == 2


def test_a_flood_from_one_address_waits_across_accounts_but_not_other_addresses(settings, alice):
    settings.MTM_LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    client = secure_client()
    for username in ("bob", "carol", "dave"):
        assert sign_in(client, username, "guess", addr=STRANGER_ADDR).status_code == 200
    resp = sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR)
    assert resp.status_code == 429 and "from your address, for any account" in text(resp)
    assert 0 < int(resp["Retry-After"]) <= 30
    assert sign_in(secure_client(), "alice", PASSWORD, addr=ALICE_ADDR).status_code == 302
    # A success elsewhere does not reset the flooding address's count.
    assert sign_in(client, "alice", PASSWORD, addr=STRANGER_ADDR).status_code == 429


def test_a_right_password_after_a_few_typos_clears_them(alice):
    client = secure_client()
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES - 1):
        sign_in(client, "alice", "typo", addr=ALICE_ADDR)
    assert sign_in(client, "alice", PASSWORD, addr=ALICE_ADDR).status_code == 302
    client.logout()
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES - 1):
        sign_in(client, "alice", "typo", addr=ALICE_ADDR)
    assert sign_in(client, "alice", PASSWORD, addr=ALICE_ADDR).status_code == 302 and signed_in(client)


def test_the_admin_sign_in_and_the_password_change_form_share_the_count(django_user_model):
    boss = django_user_model.objects.create_superuser("boss", password=PASSWORD)
    client = secure_client(boss)
    new = "a-newer-pass-5678"
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        client.post(
            "/accounts/password/",
            {"old_password": "wrong", "new_password1": new, "new_password2": new},
            REMOTE_ADDR=STRANGER_ADDR,
        )
    refused = client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": new, "new_password2": new},
        REMOTE_ADDR=STRANGER_ADDR,
    )
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 30
    boss.refresh_from_db()
    assert boss.check_password(PASSWORD)
    assert AuditEvent.objects.filter(action="password_change.throttled", actor=boss).count() == 1
    admin = secure_client()
    at_admin = sign_in(admin, "boss", PASSWORD, STRANGER_ADDR, ADMIN_LOGIN)
    assert "Too many failed sign-in attempts" in text(at_admin)
    assert at_admin.status_code == 429 and 0 < int(at_admin["Retry-After"]) <= 30
    assert not signed_in(admin)
    assert sign_in(secure_client(), "boss", PASSWORD, addr=ALICE_ADDR, url=ADMIN_LOGIN).status_code == 302


def test_a_right_password_at_a_door_the_account_may_not_use_is_no_guess(alice):
    """alice is no staff: her right password at the admin's sign-in is refused there, but it is not a failure."""
    client = secure_client()
    for _ in range(django_settings.MTM_LOGIN_MAX_FAILURES + 2):
        resp = sign_in(client, "alice", PASSWORD, addr=ALICE_ADDR, url=ADMIN_LOGIN)
        assert resp.status_code == 200 and "staff account" in text(resp)
    assert checked_passwords() == 0
    assert sign_in(client, "alice", PASSWORD, addr=ALICE_ADDR).status_code == 302


def test_ipv6_addresses_of_one_network_count_as_one(alice):
    """An IPv6 attacker holds a whole /64: a new address per try does not buy new tries."""
    client = secure_client()
    for n in range(django_settings.MTM_LOGIN_MAX_FAILURES):
        assert sign_in(client, "alice", f"guess-{n}", addr=f"2001:db8:0:7::{n + 1:x}").status_code == 200
    assert sign_in(client, "alice", PASSWORD, addr="2001:db8:0:7:ffff::99").status_code == 429
    assert sign_in(secure_client(), "alice", PASSWORD, addr="2001:db8:0:8::1").status_code == 302
