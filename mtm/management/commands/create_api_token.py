"""`manage.py create_api_token USERNAME [--staff] [--create-user] [--name NAME]`: issue a personal API token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from mtm import audit
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
        with database_ready(), transaction.atomic():
            user = self._user(username, create_user)
            if staff and not user.is_staff:
                user.is_staff = True
                user.save(update_fields=["is_staff"])
                audit.record_change(Actor.command_line(), "user.make_staff", user, {"is_staff": [False, True]})
            try:
                token, raw = create_token(user, name, actor=Actor.command_line())
            except TokenRefused as refused:
                raise CommandError(refused.problem.message, returncode=EXIT_USAGE) from None
        role = "staff" if user.is_staff else "member"
        self.stdout.write(f"API token {token.prefix}… for {user.get_username()} ({role}); it is shown once:")
        self.stdout.write(raw)

    def _user(self, username: str, create: bool):
        User = get_user_model()
        if "\x00" in username:
            raise CommandError("The username contains a NUL character.", returncode=EXIT_USAGE)
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is not None:
            if not user.is_active:
                raise CommandError(f"User '{username}' is disabled; re-activate it first.", returncode=EXIT_USAGE)
            return user
        if not create:
            raise CommandError(
                f"No user '{username}'. Pass --create-user to create it, or check the name "
                "(python manage.py shell -c 'from django.contrib.auth.models import User; "
                'print(list(User.objects.values_list("username", flat=True)))\').',
                returncode=EXIT_USAGE,
            )
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(username)
            if len(username) > field.max_length:
                raise ValidationError(f"at most {field.max_length} characters")
        except ValidationError as exc:
            raise CommandError(f"'{username}' is not a valid username: {' '.join(exc.messages)}", returncode=EXIT_USAGE)
        user = User.objects.create_user(**{User.USERNAME_FIELD: username})
        user.set_unusable_password()
        user.save()
        audit.record_change(Actor.command_line(), "user.create", user, {"username": [None, username]})
        return user
