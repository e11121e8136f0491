"""Helpers shared by the portal's management commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.core.management.base import CommandError
from django.db import DatabaseError

EXIT_USAGE = 2


@contextlib.contextmanager
def database_ready() -> Iterator[None]:
    """A database that is missing or not migrated is a setup problem with a remedy, not a traceback."""
    try:
        yield
    except DatabaseError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(
            f"The portal's database is not ready ({first_line}). Run `python manage.py migrate` "
            "(or `make run` once), and check DATABASE_URL.",
            returncode=EXIT_USAGE,
        )
