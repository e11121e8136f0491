"""`manage.py create_sample_dataset`: a small prompt/completion file under the first allowed dataset root."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from models_registry.lookup import dataset_roots
from projects.datasets.samples import write_sample_dataset


class Command(BaseCommand):
    help = "Write a small sample dataset (prompt/completion JSONL) under the first allowed dataset root."

    def handle(self, *args, **options) -> None:
        roots = dataset_roots()
        if not roots:
            raise CommandError("No dataset root is configured: set MTM_DATASET_ROOTS or add one under Settings.")
        try:
            path, written = write_sample_dataset(roots[0])
        except PermissionError as exc:
            raise CommandError(
                f"Cannot write to {exc.filename or roots[0]}: permission denied. Check its permissions "
                f"(ls -ld {roots[0]}) or choose another dataset root."
            )
        if written:
            self.stdout.write(self.style.SUCCESS(f"Sample dataset: written to {path}."))
        else:
            self.stdout.write(f"Sample dataset: {path} is there already; left as it is.")
