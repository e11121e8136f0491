"""`manage.py resolve_model NAME [--revision R] [--json]`: where a model resolves and whether it is usable."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from models_registry.cli_output import EXIT_INVALID, as_json, render_resolution
from models_registry.lookup import resolve_model
from mtm.cli import database_ready


class Command(BaseCommand):
    help = (
        "Resolve a model name as training would (enabled override, then the HF cache) and check its format. "
        "Exit status: 0 valid, 1 invalid (including a name that is not a repo id), 2 usage error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="A Hub repo id, e.g. meta-llama/Llama-3.2-3B-Instruct.")
        parser.add_argument("--revision", default=None, help="Branch, tag or 40-character commit (default: main).")
        parser.add_argument("--json", action="store_true", help="Print the API's validate-model JSON.")

    def handle(self, *args, name: str, revision: str | None, json: bool, **options) -> None:
        with database_ready():
            result = resolve_model(name, revision).model_dump(mode="json")
        self.stdout.write(as_json(result) if json else render_resolution(result))
        if not result["valid"]:
            raise SystemExit(EXIT_INVALID)
