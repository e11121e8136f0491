"""Test databases of this pytest session's own, so sessions running side by side never destroy each other's.

Several people (and `make test`) may run the suite at once in one checkout and against one PostgreSQL:
with one fixed test database name, each session's set-up drops the database another is using.
"""

from __future__ import annotations

from pathlib import Path


def suffix_test_databases(suffix: str) -> None:
    """Give every configured database a TEST NAME ending in `suffix` (before `.sqlite3` for SQLite files)."""
    from django.conf import settings

    for conf in settings.DATABASES.values():
        test = conf.setdefault("TEST", {})
        if conf["ENGINE"] == "django.db.backends.sqlite3":
            name = test.get("NAME")
            if not name or name == ":memory:" or str(name).startswith("file:"):
                continue
            path = Path(name)
            test["NAME"] = str(path.with_name(f"{path.stem}-{suffix}{path.suffix}"))
        else:
            test["NAME"] = f"{test.get('NAME') or 'test_' + conf['NAME']}_{suffix}"
