"""The error and warning objects every check returns: a code for scripts, a message and a hint for people, and
the field the problem concerns when it concerns one (a form shows it under that field's box).

One pydantic model is the object the checks return, the JSON the API answers and pages store, and its schema:
`model_dump()` gives code, message and hint, and field only when the problem names one."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema


def _unnamed(field: str) -> bool:
    return not field


class Problem(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    hint: str = ""
    # Left out of the schema: only the bodies whose problems name request fields document it (FieldProblemOut).
    field: SkipJsonSchema[str] = Field("", exclude_if=_unnamed)

    def __init__(self, code: str, message: str, hint: str = "", field: str = "") -> None:
        super().__init__(code=code, message=message, hint=hint, field=field)
