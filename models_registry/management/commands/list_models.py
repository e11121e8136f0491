"""`manage.py list_models [--json] [--valid | --invalid] [--query TEXT]`: every cached model and override."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from models_registry.cli_output import EXIT_INVALID, as_json, render_listing
from models_registry.lookup import available_models
from mtm.cli import database_ready


class Command(BaseCommand):
    help = (
        "List the models in the HF cache and the enabled overrides, each with its validity. "
        "Exit status: 0 when every listed model is valid, 1 when any is invalid, 2 usage error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the API's models/available JSON.")
        parser.add_argument("--query", "-q", default=None, help="Only names containing this text.")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--valid", dest="valid", action="store_true", default=None, help="Only valid models.")
        which.add_argument("--invalid", dest="valid", action="store_false", help="Only invalid models.")

    def handle(self, *args, json: bool, query: str | None, valid: bool | None, **options) -> None:
        with database_ready():
            cache_dir, models = available_models(query, valid)
        items = [m.model_dump(mode="json") for m in models]
        if json:
            self.stdout.write(as_json({"cache_dir": str(cache_dir), "count": len(items), "models": items}))
        else:
            self.stdout.write(render_listing(str(cache_dir), items))
        if any(not item["valid"] for item in items):
            raise SystemExit(EXIT_INVALID)
