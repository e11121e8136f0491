"""Stop strings stored before control characters were refused (possible on SQLite only: PostgreSQL stores no NUL)
lose those characters, so reading the answer's parameters back never fails on them. A stop string left empty goes."""

import unicodedata

from django.db import migrations


def _clean(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) not in ("Cc", "Cs"))


def drop_control_characters(apps, schema_editor):
    generation = apps.get_model("playground", "Generation")
    for row in generation.objects.exclude(params={}).iterator():
        stops = (row.params or {}).get("stop")
        if not isinstance(stops, list) or not any(isinstance(s, str) and _clean(s) != s for s in stops):
            continue
        kept = [cleaned for s in stops if isinstance(s, str) and (cleaned := _clean(s))]
        generation.objects.filter(pk=row.pk).update(params={**row.params, "stop": kept})


class Migration(migrations.Migration):
    dependencies = [("playground", "0003_load_aware_turns")]

    operations = [migrations.RunPython(drop_control_characters, migrations.RunPython.noop)]
