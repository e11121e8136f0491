"""`manage.py create_demo_model`: put a tiny random-weights Llama into the HF cache, built offline."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_registry.demo import DEMO_MODEL_NAME, create_demo_model
from models_registry.lookup import current_cache_dir, resolve_model


def cached_repos(cache_dir: Path) -> list[str]:
    """Names of the `models--*` folders in the cache (none when the folder does not exist yet)."""
    try:
        return sorted(entry.name for entry in cache_dir.iterdir() if entry.name.startswith("models--"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError as exc:
        raise CommandError(
            f"Cannot read the model cache {cache_dir}: {exc.strerror}. Check its permissions (ls -ld {cache_dir}) "
            "or point HF_HOME / the Model Cache Path setting at a folder you can read."
        )


class Command(BaseCommand):
    help = (
        f"Build {DEMO_MODEL_NAME} (a tiny Llama with random weights, no download) into the model cache the "
        "portal uses, so there is something to resolve and train on."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing when the cache already holds any model (what `make run` uses).",
        )

    def handle(self, *args, if_empty: bool, **options) -> None:
        cache_dir, chosen_by = current_cache_dir()
        if if_empty:
            repos = cached_repos(cache_dir)
            if repos:
                self.stdout.write(
                    f"Demo model: not needed; the cache {cache_dir} already holds {len(repos)} model(s), "
                    f"e.g. {repos[0]}."
                )
                return
        self.stdout.write(f"Demo model: building {DEMO_MODEL_NAME} into {cache_dir} (chosen by {chosen_by}) ...")
        try:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            cache_dir.mkdir(parents=True, exist_ok=True)
            snapshot = create_demo_model(cache_dir)
        except PermissionError as exc:
            raise CommandError(
                f"Cannot write to directory {exc.filename or cache_dir}: permission denied. Check its permissions "
                f"(ls -la {cache_dir}), or set HF_HOME / the Model Cache Path setting to a folder you can write."
            )
        result = resolve_model(DEMO_MODEL_NAME)
        if not result.valid:
            problems = "; ".join(f"{p.code}: {p.message}" for p in result.errors) or "it did not resolve"
            raise CommandError(f"The demo model was written to {snapshot} but does not validate: {problems}")
        self.stdout.write(
            self.style.SUCCESS(f"Demo model: created {DEMO_MODEL_NAME} at {snapshot}.")
            + "\nIt has random weights: it proves the pipeline end to end, not a language model."
        )
