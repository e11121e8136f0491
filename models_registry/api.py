"""The registry's JSON API: model validation and listing, overrides and portal settings.

Mounted at the API root with full paths (see mtm/api.py): /projects/validate-model and friends live beside the
projects router's /projects/{id}, and this router must be mounted first so its fixed paths win.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from ninja import Router
from ninja.responses import Status

from models_registry import edits, lookup
from models_registry.deep_state import deep_state, with_deep_verdict
from models_registry.models import ModelOverride
from models_registry.names import name_error, revision_error
from models_registry.override_services import (
    OVERRIDE_FIELDS,
    OverrideRefused,
)
from models_registry.override_services import (
    create_override as create,
)
from models_registry.override_services import (
    delete_override as delete,
)
from models_registry.override_services import (
    update_override as update,
)
from models_registry.schemas import (
    AvailableModelsOut,
    ErrorOut,
    OverrideIn,
    OverrideOut,
    OverridePatch,
    ResolutionOut,
    SettingsOut,
    SettingsPatch,
    ValidateModelIn,
)
from models_registry.settings_services import SettingsRefused
from models_registry.settings_services import update_settings as save_settings
from mtm.api_errors import ApiError
from mtm.audit import Actor, Channel
from mtm.auth import require_staff
from mtm.request_limits import Busy, busy_response, expensive_request
from workers.models import SchedulingSettings

router = Router()
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}
BODY_ERRORS = {**ERRORS, 413: ErrorOut}  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE
QUERY_ERRORS = {**ERRORS, 400: ErrorOut}  # more query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS


@router.post("/projects/validate-model", response={200: ResolutionOut, **BODY_ERRORS, 429: ErrorOut}, tags=["models"])
def validate_model(request: HttpRequest, payload: ValidateModelIn) -> ResolutionOut | JsonResponse:
    """Can this model be trained on? Where it is, which revision, and what is wrong with it. `valid`, `errors` and
    `warnings` are the instant rules' answer, overridden by transformers' own verdict once a worker has cached it;
    `deep` is that verdict ("checking" until then: a check is queued, ask again). A file too large to read in this
    request is left to that verdict (warning `checked_on_worker`). More checks at once than
    MTM_EXPENSIVE_REQUESTS_PER_MEMBER: 429 with Retry-After."""
    if problem := name_error(payload.model_name):
        raise ApiError(422, [problem])
    revision = (payload.revision or "").strip() or None
    if revision and (problem := revision_error(revision)):
        raise ApiError(422, [problem])
    try:
        with expensive_request(Actor.of(request, Channel.API).user):
            instant = lookup.resolve_model(payload.model_name, revision)
            deep = deep_state(instant, ask=True)  # a POST: asking a worker for the check is this call's to do
    except Busy as busy:
        return busy_response(busy)
    return ResolutionOut(**dict(with_deep_verdict(instant, deep)), deep=deep)


@router.get("/projects/models/available", response={200: AvailableModelsOut, **QUERY_ERRORS}, tags=["models"])
def available_models(request: HttpRequest, q: str | None = None, valid: bool | None = None) -> dict:
    """Every cached model and every enabled override with its validity; ?q= filters by name, ?valid= by validity.
    `deep` is transformers' cached verdict on each (done, failed, checking or unchecked), which `valid` includes;
    read from the cache, never computed or asked here (the workers fill it in the background)."""
    cache_dir, models = lookup.available_models(q, valid)
    return {"cache_dir": str(cache_dir), "count": len(models), "models": models}


def _override_out(override: ModelOverride) -> dict:
    data = {field: getattr(override, field) for field in OVERRIDE_FIELDS}
    return {"id": override.pk, **data, "validation": edits.override_validation(override)}


def _override_or_404(override_id: int) -> ModelOverride:
    override = ModelOverride.objects.filter(pk=override_id).first() if 0 < override_id < 2**63 else None
    if override is None:
        raise ApiError.single(
            404,
            "not_found",
            f"No model override with id {override_id}.",
            "List the overrides with GET /api/v1/model-overrides.",
        )
    return override


def _refused(exc: OverrideRefused) -> ApiError:
    return ApiError(409 if exc.conflict else 422, exc.problems)


@router.get("/model-overrides", response={200: list[OverrideOut], **ERRORS}, tags=["model overrides"])
def list_overrides(request: HttpRequest) -> list[dict]:
    return [_override_out(o) for o in ModelOverride.objects.all()]


@router.post("/model-overrides", response={201: OverrideOut, **BODY_ERRORS}, tags=["model overrides"])
def create_override(request: HttpRequest, payload: OverrideIn) -> Status:
    """Staff: make a name resolve to a local folder before the cache is searched."""
    require_staff(request, "create model overrides")
    try:
        override = create(payload.model_dump(), actor=Actor.of(request, Channel.API))
    except OverrideRefused as exc:
        raise _refused(exc)
    return Status(201, _override_out(override))


@router.get("/model-overrides/{override_id}", response={200: OverrideOut, **ERRORS}, tags=["model overrides"])
def get_override(request: HttpRequest, override_id: int) -> dict:
    return _override_out(_override_or_404(override_id))


@router.patch("/model-overrides/{override_id}", response={200: OverrideOut, **BODY_ERRORS}, tags=["model overrides"])
def update_override(request: HttpRequest, override_id: int, payload: OverridePatch) -> dict:
    """Staff: change some of an override's fields; fields left out keep their values."""
    require_staff(request, "change model overrides")
    override = _override_or_404(override_id)
    try:
        update(override, payload.model_dump(exclude_unset=True), actor=Actor.of(request, Channel.API))
    except OverrideRefused as exc:
        raise _refused(exc)
    return _override_out(override)


@router.delete("/model-overrides/{override_id}", response={204: None, **ERRORS}, tags=["model overrides"])
def delete_override(request: HttpRequest, override_id: int) -> Status:
    require_staff(request, "delete model overrides")
    delete(_override_or_404(override_id), actor=Actor.of(request, Channel.API))
    return Status(204, None)


def _settings_out() -> dict:
    row = lookup.portal_settings()
    cache_dir, _ = lookup.current_cache_dir()
    return {
        "model_cache_path": row.model_cache_path,
        "effective_cache_dir": str(cache_dir),
        "allowed_output_roots": lookup.output_roots(),
        "allowed_dataset_roots": lookup.dataset_roots(),
        "upload_quota_bytes": row.upload_quota_bytes,
        "live_runs_per_member": SchedulingSettings.load().live_runs_per_member,
    }


@router.get("/settings", response={200: SettingsOut, **ERRORS}, tags=["settings"])
def get_settings(request: HttpRequest) -> dict:
    """The Directory Settings; roots are the effective ones (the environment's when none are set here)."""
    return _settings_out()


@router.patch("/settings", response={200: SettingsOut, **BODY_ERRORS}, tags=["settings"])
def update_settings(request: HttpRequest, payload: SettingsPatch) -> dict:
    """Staff: set the Model Cache Path (blank = HF default), the allowed output and dataset roots, and the
    per-user upload quota in bytes (0 = no limit) and how many live runs one member may have (0 = no cap)."""
    require_staff(request, "change the portal settings")
    try:
        save_settings(payload.model_dump(exclude_unset=True), actor=Actor.of(request, Channel.API))
    except SettingsRefused as exc:
        raise ApiError(422, exc.problems)
    return _settings_out()
