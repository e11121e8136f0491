"""Sign-in throttling: a growing wait per account and address, counted before the password is checked.

Every password try is counted in two rows of mtm.SignInThrottle, the account's from this address and the address's
own (any account), in one transaction that locks both (select_for_update on PostgreSQL; SQLite's IMMEDIATE
transactions take the write lock at BEGIN), and only then is the password checked. So however many tries arrive at
once, at most MTM_LOGIN_MAX_FAILURES of them reach the check before the wait starts.

Past MTM_LOGIN_MAX_FAILURES failures of one account from one address, or MTM_LOGIN_MAX_FAILURES_PER_ADDRESS from one
address for any account, the next try waits FIRST_DELAY after the last failure, doubling with each further failure
up to MTM_LOGIN_MAX_DELAY_MINUTES; a try that comes early is refused unchecked. One failure is forgotten per longest
delay. The account is counted per address (an IPv6 address per /64), so a stranger guessing alice's password from
elsewhere never holds alice back at her own address. A right password clears its account-and-address count and
uncounts its try from the address's, so signing in to one's own account does not reset a guessing spree from the
same address.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mtm.models import SignInThrottle

FIRST_DELAY = timedelta(seconds=30)
# Rows with no failure for this long are deleted on the next failure anywhere.
KEEP_ROWS = timedelta(days=2)
ANY_ACCOUNT = ""


@dataclass(frozen=True)
class Refusal:
    """A try refused unchecked: which count made it wait (`row`), until when, and whether it is the first refusal
    since that count's last failure (the one that is audited)."""

    row: SignInThrottle
    until: datetime
    at: datetime
    first: bool

    @property
    def waits_for(self) -> str:
        return "account" if self.row.account else "address"

    @property
    def wait(self) -> timedelta:
        """The whole wait after the last failure (the doubling delay, not what is left of it)."""
        return self.until - self.row.last_failure_at

    def retry_after(self, now: datetime | None = None) -> int:
        """Seconds until a try is checked again, for the Retry-After header."""
        return max(1, math.ceil((self.until - (now or self.at)).total_seconds()))

    def message(self) -> str:
        wait = _span(self.retry_after())
        if self.waits_for == "address":
            return (
                "Too many failed sign-in attempts from your address, for any account. Wait "
                f"{wait} before trying again. If your team signs in through one proxy, staff can name it in "
                "MTM_TRUSTED_PROXIES so that each person's own address counts."
            )
        return (
            f"Too many failed sign-in attempts for '{self.row.account}' from your address, so this try was not "
            f"checked. Wait {wait} before trying again; each further failure doubles the wait. If you forgot your "
            "password, ask a staff member of your team to reset it."
        )

    def after_failure(self) -> str:
        """Said with the failure that started this wait, so the next try's refusal comes as no surprise."""
        return (
            f"That was too many failures: your next try is checked in {_span(self.retry_after())}, and each further "
            "failure doubles the wait."
        )


@dataclass(frozen=True)
class Admission:
    """A try counted as a failure in advance; `succeeded` or `not_a_guess` uncount it once the password is known."""

    address_row: SignInThrottle
    account_row: SignInThrottle | None


def normalise_username(username: str) -> str:
    """The key failures are counted under: case and surrounding spaces do not make a new account to guess."""
    return (username or "").strip().casefold()[:150]


def longest_delay() -> timedelta:
    return timedelta(minutes=settings.MTM_LOGIN_MAX_DELAY_MINUTES)


def admit(username: str, address: str | None, now: datetime | None = None) -> Admission | Refusal:
    """Count a try for `username` from `address` before its password is checked, or refuse it unchecked while a
    wait is in force (the first refusal per wait is marked for the audit)."""
    now = now or timezone.now()
    account = normalise_username(username)
    with transaction.atomic():
        # One lock order everywhere (the address's row, then the account's) so two tries never deadlock.
        address_row = _locked(ANY_ACCOUNT, address)
        account_row = _locked(account, address) if account else None
        rows = [row for row in (address_row, account_row) if row is not None]
        if refusal := _longest_wait(rows, now):
            if refusal.first:
                refusal.row.refusal_audited_at = now
                refusal.row.save(update_fields=["refusal_audited_at"])
            return refusal
        for row in rows:
            row.failures = remembered_failures(row, now) + 1
            row.last_failure_at = now
            row.save(update_fields=["failures", "last_failure_at"])
    return Admission(address_row, account_row)


def refusal(username: str, address: str | None, now: datetime | None = None) -> Refusal | None:
    """The wait in force for `username` from `address`, without counting anything."""
    now = now or timezone.now()
    account = normalise_username(username)
    rows = SignInThrottle.objects.filter(account__in={ANY_ACCOUNT, account}, address=counted_address(address))
    return _longest_wait(list(rows), now)


def failed(admission: Admission, now: datetime | None = None) -> None:
    """The password was wrong: the try stays counted. Rows long quiet are pruned on the way."""
    SignInThrottle.objects.filter(last_failure_at__lt=(now or timezone.now()) - KEEP_ROWS).delete()


def succeeded(admission: Admission) -> None:
    """The password was right: its account-and-address count is cleared, its try uncounted from the address's."""
    with transaction.atomic():
        _uncount(admission.address_row)
        if admission.account_row is not None:
            SignInThrottle.objects.select_for_update().filter(pk=admission.account_row.pk).update(failures=0)


def not_a_guess(admission: Admission) -> None:
    """The password was right but the account may not use this door (inactive, or not staff at the admin's): the
    try is uncounted and nothing is cleared."""
    with transaction.atomic():
        _uncount(admission.address_row)
        if admission.account_row is not None:
            _uncount(admission.account_row)


def remembered_failures(row: SignInThrottle, now: datetime) -> int:
    """The row's failures still counted at `now`: one is forgotten per longest delay since the last failure."""
    period = longest_delay()
    if period <= timedelta(0):
        return 0
    return max(0, row.failures - int(max(timedelta(0), now - row.last_failure_at) / period))


def wait_until(row: SignInThrottle, now: datetime) -> datetime | None:
    """Until when `row`'s failures make a try wait, or None when a try may be checked now."""
    free = settings.MTM_LOGIN_MAX_FAILURES if row.account else settings.MTM_LOGIN_MAX_FAILURES_PER_ADDRESS
    if free < 1 or row.failures < free:
        return None
    delay = min(FIRST_DELAY * 2 ** min(row.failures - free, 32), longest_delay())
    until = row.last_failure_at + delay
    return until if until > now else None


def counted_address(address: str | None) -> str:
    """What an address is counted under: an IPv4 address itself, an IPv6 address its /64 (one site's network,
    where an attacker holds as many addresses as she likes); empty when unknown."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return ""
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _locked(account: str, address: str | None) -> SignInThrottle:
    row, _ = SignInThrottle.objects.select_for_update().get_or_create(
        account=account, address=counted_address(address), defaults={"failures": 0}
    )
    return row


def _uncount(row: SignInThrottle) -> None:
    locked = SignInThrottle.objects.select_for_update().filter(pk=row.pk).first()
    if locked is not None and locked.failures > 0:
        locked.failures -= 1
        locked.save(update_fields=["failures"])


def _longest_wait(rows: list[SignInThrottle], now: datetime) -> Refusal | None:
    waits = [(until, row) for row in rows if (until := wait_until(row, now)) is not None]
    if not waits:
        return None
    until, row = max(waits, key=lambda wait: wait[0])
    first = row.refusal_audited_at is None or row.refusal_audited_at < row.last_failure_at
    return Refusal(row, until, now, first)


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"
