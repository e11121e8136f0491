"""Sign-in throttling: too many failed password sign-ins for one account or from one address lock it out a while.

Attempts live in the database (mtm.LoginAttempt), so every gunicorn worker sees the same counts. A success
clears the account's failures (counting restarts after it) but not the address's, so signing in to one's own
account does not reset a guessing spree from the same address.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from mtm.models import LoginAttempt

KEEP_ATTEMPTS = timedelta(days=1)


@dataclass(frozen=True)
class Lockout:
    """Why sign-in is refused and until when."""

    reason: str  # "account" or "address"
    until: datetime

    def minutes_left(self, now: datetime | None = None) -> int:
        seconds = (self.until - (now or timezone.now())).total_seconds()
        return max(1, math.ceil(seconds / 60))

    def message(self, now: datetime | None = None) -> str:
        minutes = self.minutes_left(now)
        unit = "minute" if minutes == 1 else "minutes"
        return (
            "Too many failed sign-in attempts for this account or address. "
            f"Try again in {minutes} {unit}. If you forgot your password, ask a staff member of your team to reset it."
        )


def normalise_username(username: str) -> str:
    """The key failures are counted under: case and surrounding spaces do not make a new account to guess."""
    return (username or "").strip().casefold()[:150]


def window() -> timedelta:
    return timedelta(minutes=settings.MTM_LOGIN_WINDOW_MINUTES)


def lockout(username: str, remote_addr: str | None, now: datetime | None = None) -> Lockout | None:
    """The lockout in force for this account or address, or None when a password may be checked."""
    now = now or timezone.now()
    since = now - window()
    account = normalise_username(username)
    if account:
        last_success = LoginAttempt.objects.filter(username=account, succeeded=True, at__gt=since).aggregate(
            last=Max("at")
        )["last"]
        failures = LoginAttempt.objects.filter(username=account, succeeded=False, at__gt=last_success or since)
        if until := _locked_until(failures, settings.MTM_LOGIN_MAX_FAILURES):
            return Lockout("account", until)
    if remote_addr:
        failures = LoginAttempt.objects.filter(remote_addr=remote_addr, succeeded=False, at__gt=since)
        if until := _locked_until(failures, settings.MTM_LOGIN_MAX_FAILURES_PER_ADDRESS):
            return Lockout("address", until)
    return None


def _locked_until(failures, limit: int) -> datetime | None:
    """When the count falls below `limit` again: the limit-th newest failure leaves the window then."""
    if limit < 1:
        return None
    times = list(failures.order_by("-at").values_list("at", flat=True)[:limit])
    if len(times) < limit:
        return None
    return times[-1] + window()


def note_attempt(username: str, remote_addr: str | None, succeeded: bool) -> LoginAttempt:
    """Record one checked password; attempts no longer needed for counting are pruned on the way."""
    now = timezone.now()
    LoginAttempt.objects.filter(at__lt=now - max(KEEP_ATTEMPTS, window())).delete()
    return LoginAttempt.objects.create(
        username=normalise_username(username), remote_addr=remote_addr, at=now, succeeded=succeeded
    )
