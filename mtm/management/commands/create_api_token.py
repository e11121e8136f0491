"""`manage.py create_api_token USERNAME [--staff] [--create-user] [--name NAME]`: issue a personal API token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from mtm.account_services import AccountRefused, create_account, update_account
from mtm.audit import Actor
from mtm.cli import EXIT_USAGE, database_ready
from mtm.models import ApiToken
from mtm.token_services import TokenRefused, create_token


class Command(BaseCommand):
    help = (
        "Issue an API token for USERNAME and print it, alone, on the last line (it is stored hashed and never "
        "shown again). Use it as 'Authorization: Bearer <token>'. Exit status 2 on a usage error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (may edit overrides/settings).")
        parser.add_argument("--create-user", action="store_true", help="Create the user when it does not exist.")
        parser.add_argument(
            "--name", default="cli", help="A label for the token, e.g. 'ci' or 'laptop' (default: cli)."
        )

    def handle(self, *args, username: str, staff: bool, create_user: bool, name: str, **options) -> None:
        if len(name) > ApiToken._meta.get_field("name").max_length or "\x00" in name or not name.strip():
            raise CommandError("--name must be 1 to 100 characters, without NUL.", returncode=EXIT_USAGE)
        actor = Actor.command_line()
        with database_ready(), transaction.atomic():
            user = self._user(username, create_user, staff, actor)
            try:
                token, raw = create_token(user, name, actor=actor)
            except TokenRefused as refused:
                raise CommandError(refused.problem.message, returncode=EXIT_USAGE) from None
        role = "staff" if user.is_staff else "member"
        self.stdout.write(f"API token {token.prefix}… for {user.get_username()} ({role}); it is shown once:")
        self.stdout.write(raw)

    def _user(self, username: str, create: bool, staff: bool, actor: Actor):
        User = get_user_model()
        if "\x00" in username:
            raise CommandError("The username contains a NUL character.", returncode=EXIT_USAGE)
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is not None:
            if not user.is_active:
                raise CommandError(f"User '{username}' is disabled; re-activate it first.", returncode=EXIT_USAGE)
            if staff:
                update_account(user, is_staff=True, actor=actor)
            return user
        if not create:
            raise CommandError(
                f"No user '{username}'. Pass --create-user to create it, or check the name "
                "(python manage.py shell -c 'from django.contrib.auth.models import User; "
                'print(list(User.objects.values_list("username", flat=True)))\').',
                returncode=EXIT_USAGE,
            )
        try:
            return create_account(username, is_staff=staff, actor=actor)
        except AccountRefused as refused:
            raise CommandError(refused.problem.message, returncode=EXIT_USAGE) from None
