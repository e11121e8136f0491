"""A model as the list shows it (ListedModel) and transformers' cached verdict on it (ListedDeep). Their JSON
(model_dump) is the API's models/available answer, the persisted listing's entries and the list command's --json."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from mtm.shared.problems import Problem

CHECKING, DONE, FAILED, UNCHECKED = "checking", "done", "failed", "unchecked"


class ListedDeep(BaseModel):
    """transformers' verdict on a listed model's folder, as its cache holds it (`state` says whether it does)."""

    # Every field is in every answer: the API schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    state: Literal["checking", "done", "failed", "unchecked"] = Field(
        description='"done": transformers has judged this snapshot (`valid`, and its reasons first in `errors`); '
        '"failed": its check could not finish; "checking": a worker is checking it now; "unchecked": not yet '
        "(the workers' background fill will). Read from the cache: listing never computes or asks."
    )
    valid: bool | None = None
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    checked_at: datetime | None = None

    @property
    def reason(self) -> Problem | None:
        """transformers' first refusal, when it refuses."""
        return self.errors[0] if self.errors else None


class ListedModel(BaseModel):
    """One model as the list shows it: where it was found, and its instant verdict overridden by transformers' cached
    one (`deep`) where the list has read it."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    model_name: str
    source: str
    path: str | None
    revision: str | None
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    # An override's setting: transformers' check runs the model's code only then.
    trust_remote_code: bool = Field(False, exclude=True)
    deep: ListedDeep | None = Field(
        None,
        description="transformers' verdict as cached for the listed folder; null where it is not asked (no folder, "
        "or an instant refusal it cannot overrule).",
    )

    @computed_field(description="The instant rules' answer, overridden by transformers' cached verdict.")
    @property
    def valid(self) -> bool:
        return not self.errors
