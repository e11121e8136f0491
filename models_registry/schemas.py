"""Request and response bodies of the registry's API (API v1's JSON contract)."""

from __future__ import annotations

from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, ConfigDict, Field, field_validator

from models_registry.deep_state import DeepState
from models_registry.listed import ListedModel
from models_registry.outputs import OutputDirCheck
from models_registry.resolution import Resolution
from mtm.shared.problems import Problem
from mtm.shared.text import encodable_or_refused, storable_or_refused
from workers.models import MAX_LIVE_RUNS_PER_MEMBER

# Text that reaches the filesystem must encode; text that reaches the database must also be NUL-free.
PathText = Annotated[str, AfterValidator(encodable_or_refused)]
StoredPath = Annotated[str, Field(max_length=4096), AfterValidator(storable_or_refused)]
StoredNote = Annotated[str, Field(max_length=10_000), AfterValidator(storable_or_refused)]
RootList = Annotated[list[StoredPath], Field(max_length=100)]


class StrictBody(Schema):
    """JSON bodies: no coercion, so "yes" is not a boolean and 5 is not a name."""

    model_config = ConfigDict(strict=True)


class NoNulls(StrictBody):
    """PATCH bodies: a field left out stays as it is; a field sent as null is an error."""

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null; leave the field out to keep its value")
        return value


class ValidateModelIn(StrictBody):
    model_name: str = Field(description="A Hub repo id, e.g. meta-llama/Llama-3.2-3B-Instruct.")
    revision: str | None = Field(None, description="A branch, tag or 40-character commit; default main.")


class ValidateOutputDirIn(StrictBody):
    output_directory: PathText = Field(description="Absolute path inside an allowed output root.")


class OverrideIn(StrictBody):
    model_name: str
    path: StoredPath = Field(description="Absolute path of the model folder on the server.")
    enabled: bool = True
    trust_remote_code: bool = False
    note: StoredNote = ""


class OverridePatch(NoNulls):
    model_name: str | None = None
    path: StoredPath | None = None
    enabled: bool | None = None
    trust_remote_code: bool | None = None
    note: StoredNote | None = None


class SettingsPatch(NoNulls):
    model_cache_path: StoredPath | None = Field(None, description="Blank for the Hugging Face default.")
    allowed_output_roots: RootList | None = None
    allowed_dataset_roots: RootList | None = None
    upload_quota_bytes: int | None = Field(
        None, ge=0, le=2**62, description="Bytes of uploaded datasets each user may keep; 0: no limit."
    )
    live_runs_per_member: int | None = Field(
        None,
        ge=0,
        le=MAX_LIVE_RUNS_PER_MEMBER,
        description="Runs one member (staff included) may have queued or running at once; a Start beyond it is "
        "refused (409, code live_run_cap), and workers take no more of hers while that many run. 0: no cap.",
    )


class ErrorOut(Schema):
    detail: str
    errors: list[Problem]


# The API's names for the checks' results: the fields are the result's own, and a view answers the result itself
# (from_attributes reads it into the API's class).
RESULT = ConfigDict(from_attributes=True)


class OutputDirOut(OutputDirCheck):
    model_config = RESULT


class DeepVerdictOut(DeepState):
    model_config = RESULT


class ListedModelOut(ListedModel):
    model_config = RESULT


class ResolutionOut(Resolution):
    model_config = RESULT

    deep: DeepVerdictOut | None = Field(
        None,
        description="transformers' own verdict, computed on a worker and cached per snapshot; null where it is not "
        "asked (no folder, or an instant refusal it cannot overrule: an unsafe link, an interrupted download, ...).",
    )


class AvailableModelsOut(Schema):
    cache_dir: str
    count: int
    models: list[ListedModelOut]


class OverrideOut(Schema):
    id: int
    model_name: str
    path: str
    enabled: bool
    trust_remote_code: bool
    note: str
    validation: ResolutionOut


class SettingsOut(Schema):
    model_cache_path: str
    effective_cache_dir: str
    allowed_output_roots: list[str]
    allowed_dataset_roots: list[str]
    upload_quota_bytes: int
    live_runs_per_member: int = Field(description="Runs one member may have queued or running at once; 0: no cap.")
