"""`manage.py validate_model NAME_OR_PATH [--revision R] [--json]`: check a model by name, or a model folder on disk."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_registry.checks import check_model_folder
from models_registry.cli_output import EXIT_INVALID, as_json, render_resolution
from models_registry.lookup import resolve_model
from models_registry.resolution import Resolution
from mtm.cli import database_ready


def check_folder(folder: Path) -> Resolution:
    """A folder checked as an override's would be, reported in the validate-model shape (source "path")."""
    folder = folder.absolute()
    report = check_model_folder(folder, root=folder)
    return Resolution(
        model_name=str(folder),
        source="path",
        path=str(folder),
        files=report.files,
        tokenizer_source=report.tokenizer_source,
        errors=report.errors,
        warnings=report.warnings,
        searched=[f"path: {folder}"],
    )


class Command(BaseCommand):
    help = (
        "Validate a model: an existing folder (absolute or relative) is format-checked as it is; anything else is "
        "taken as a model name and resolved as training would. "
        "Exit status: 0 valid, 1 invalid, 2 usage error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("target", metavar="NAME_OR_PATH", help="A model folder, or a Hub repo id.")
        parser.add_argument(
            "--revision", default=None, help="For a name: branch, tag or 40-character commit (default: main)."
        )
        parser.add_argument("--json", action="store_true", help="Print the API's validate-model JSON.")

    def handle(self, *args, target: str, revision: str | None, json: bool, **options) -> None:
        folder = Path(target)
        try:
            is_folder = "\x00" not in target and folder.is_dir()
        except (OSError, ValueError):
            is_folder = False
        with database_ready():
            if is_folder and revision:
                raise CommandError(
                    f"--revision applies to a model name; {target} is a folder, which has no revisions.", returncode=2
                )
            found = check_folder(folder) if is_folder else resolve_model(target, revision)
            result = found.model_dump(mode="json")
        self.stdout.write(as_json(result) if json else render_resolution(result))
        if not result["valid"]:
            raise SystemExit(EXIT_INVALID)
