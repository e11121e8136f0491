"""`manage.py ensure_admin`: make sure the portal has a superuser, so a fresh `make run` can be logged into."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mtm.account_services import AccountRefused, create_account
from mtm.admin_credentials import write_credentials
from mtm.audit import Actor

PASSWORD_ENV = "MTM_ADMIN_PASSWORD"


class Command(BaseCommand):
    help = (
        "Create a superuser when none exists. The password comes from MTM_ADMIN_PASSWORD, or is generated "
        "and printed once. Does nothing when a superuser already exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="Name of the account to create (default: admin).")

    def handle(self, *args, username: str, **options) -> None:
        users = get_user_model()
        existing = users.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            self.stdout.write(f"Admin account: superuser '{existing.get_username()}' exists; nothing to do.")
            return
        password = os.environ.get(PASSWORD_ENV, "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        try:
            create_account(username, password=password, is_staff=True, is_superuser=True, actor=Actor.command_line())
        except AccountRefused as refused:
            if refused.problem.code == "username_taken":
                raise CommandError(
                    f"A user named '{username}' exists but no superuser does. Make one with "
                    f"`python manage.py createsuperuser`, or run ensure_admin --username OTHER_NAME."
                ) from None
            raise CommandError(f"{refused.problem.message} {refused.problem.hint}") from None
        if generated:
            saved = write_credentials(username, password)
            rule = "=" * 64
            self.stdout.write(
                f"{rule}\n"
                f"  Admin account created.  user: {username}   password: {password}\n"
                f"  This password is shown once here and kept in {saved} (readable by you only).\n"
                f"  Change it at /admin/password_change/ after logging in,\n"
                f"  or set {PASSWORD_ENV} before the first run to choose it yourself.\n"
                f"{rule}"
            )
        else:
            self.stdout.write(f"Admin account created: user '{username}' with the password from {PASSWORD_ENV}.")
