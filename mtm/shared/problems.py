"""The error and warning objects every check returns: a code for scripts, a message and a hint for people, and
the field the problem concerns when it concerns one (a form shows it under that field's box)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    hint: str = ""
    field: str = ""

    def to_dict(self) -> dict[str, str]:
        """code, message and hint; field only when the problem names one."""
        data = asdict(self)
        if not self.field:
            del data["field"]
        return data
