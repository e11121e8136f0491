"""The registry's JSON API: model validation and listing, output directories, overrides and portal settings.

Mounted at the API root with full paths (see mtm/api.py): /projects/validate-model and friends live beside the
projects router's /projects/{id}, and this router must be mounted first so its fixed paths win.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.http import HttpRequest
from ninja import Router
from ninja.responses import Status

from models_registry import edits, services
from models_registry.models import ModelOverride
from models_registry.names import name_error, revision_error
from models_registry.schemas import (
    AvailableModelsOut,
    ErrorOut,
    OutputDirOut,
    OverrideIn,
    OverrideOut,
    OverridePatch,
    ResolutionOut,
    SettingsOut,
    SettingsPatch,
    ValidateModelIn,
    ValidateOutputDirIn,
)
from mtm import audit
from mtm.api_errors import ApiError
from mtm.auth import require_staff

router = Router()
ERRORS = {401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, 422: ErrorOut}
BODY_ERRORS = {**ERRORS, 413: ErrorOut}  # a body over DATA_UPLOAD_MAX_MEMORY_SIZE
QUERY_ERRORS = {**ERRORS, 400: ErrorOut}  # more query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS
OVERRIDE_FIELDS = ("model_name", "path", "enabled", "trust_remote_code", "note")


@router.post("/projects/validate-model", response={200: ResolutionOut, **BODY_ERRORS}, tags=["models"])
def validate_model(request: HttpRequest, payload: ValidateModelIn) -> dict:
    """Can this model be trained on? Where it is, which revision, and what is wrong with it."""
    if problem := name_error(payload.model_name):
        raise ApiError(422, [problem])
    revision = (payload.revision or "").strip() or None
    if revision and (problem := revision_error(revision)):
        raise ApiError(422, [problem])
    return services.resolve_model(payload.model_name, revision).to_dict()


@router.get("/projects/models/available", response={200: AvailableModelsOut, **QUERY_ERRORS}, tags=["models"])
def available_models(request: HttpRequest, q: str | None = None, valid: bool | None = None) -> dict:
    """Every cached model and every enabled override with its validity; ?q= filters by name, ?valid= by validity."""
    cache_dir, models = services.available_models(q, valid)
    return {"cache_dir": str(cache_dir), "count": len(models), "models": [m.to_dict() for m in models]}


@router.post("/projects/validate-output-dir", response={200: OutputDirOut, **BODY_ERRORS}, tags=["projects"])
def validate_output_dir(request: HttpRequest, payload: ValidateOutputDirIn) -> dict:
    """Is this a directory training may write to? Absolute, inside an allowed root, writable, with room."""
    return services.validate_output_dir(payload.output_directory).to_dict()


def _override_out(override: ModelOverride) -> dict:
    data = {field: getattr(override, field) for field in OVERRIDE_FIELDS}
    return {"id": override.pk, **data, "validation": edits.override_validation(override).to_dict()}


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


def _check_override(model_name: str, path: str, exclude_pk: int | None = None) -> None:
    if problems := edits.override_problems(model_name, path):
        raise ApiError(422, problems)
    if problem := edits.duplicate_override(model_name, exclude_pk):
        raise ApiError(409, [problem])


def _save_override(override: ModelOverride) -> None:
    try:
        with transaction.atomic():
            override.save()
    except IntegrityError:  # a concurrent create of the same name
        problem = edits.duplicate_override(override.model_name, override.pk)
        raise ApiError(409, [problem] if problem else [])


@router.get("/model-overrides", response={200: list[OverrideOut], **ERRORS}, tags=["model overrides"])
def list_overrides(request: HttpRequest) -> list[dict]:
    return [_override_out(o) for o in ModelOverride.objects.all()]


@router.post("/model-overrides", response={201: OverrideOut, **BODY_ERRORS}, tags=["model overrides"])
def create_override(request: HttpRequest, payload: OverrideIn) -> Status:
    """Staff: make a name resolve to a local folder before the cache is searched."""
    require_staff(request, "create model overrides")
    values = payload.model_dump()
    values["path"] = values["path"].strip()
    _check_override(values["model_name"], values["path"])
    override = ModelOverride(**values, created_by=request.auth, updated_by=request.auth)
    _save_override(override)
    changes = {field: [None, values[field]] for field in OVERRIDE_FIELDS}
    audit.record(request.auth, "model_override.create", override, changes, request, via="api")
    return Status(201, _override_out(override))


@router.get("/model-overrides/{override_id}", response={200: OverrideOut, **ERRORS}, tags=["model overrides"])
def get_override(request: HttpRequest, override_id: int) -> dict:
    return _override_out(_override_or_404(override_id))


@router.patch("/model-overrides/{override_id}", response={200: OverrideOut, **BODY_ERRORS}, tags=["model overrides"])
def update_override(request: HttpRequest, override_id: int, payload: OverridePatch) -> dict:
    """Staff: change some of an override's fields; fields left out keep their values."""
    require_staff(request, "change model overrides")
    override = _override_or_404(override_id)
    before = {field: getattr(override, field) for field in OVERRIDE_FIELDS}
    updates = payload.model_dump(exclude_unset=True)
    if "path" in updates:
        updates["path"] = updates["path"].strip()
    after = {**before, **updates}
    _check_override(after["model_name"], after["path"], exclude_pk=override.pk)
    for field, value in updates.items():
        setattr(override, field, value)
    override.updated_by = request.auth
    _save_override(override)
    if changes := audit.diff(before, after):
        audit.record(request.auth, "model_override.update", override, changes, request, via="api")
    return _override_out(override)


@router.delete("/model-overrides/{override_id}", response={204: None, **ERRORS}, tags=["model overrides"])
def delete_override(request: HttpRequest, override_id: int) -> Status:
    require_staff(request, "delete model overrides")
    override = _override_or_404(override_id)
    changes = {field: [getattr(override, field), None] for field in OVERRIDE_FIELDS}
    with transaction.atomic():
        audit.record(request.auth, "model_override.delete", override, changes, request, via="api")
        override.delete()
    return Status(204, None)


def _settings_out() -> dict:
    row = services.portal_settings()
    cache_dir, _ = services.current_cache_dir()
    return {
        "model_cache_path": row.model_cache_path,
        "effective_cache_dir": str(cache_dir),
        "allowed_output_roots": services.output_roots(),
        "allowed_dataset_roots": services.dataset_roots(),
        "upload_quota_bytes": row.upload_quota_bytes,
    }


@router.get("/settings", response={200: SettingsOut, **ERRORS}, tags=["settings"])
def get_settings(request: HttpRequest) -> dict:
    """The Directory Settings; roots are the effective ones (the environment's when none are set here)."""
    return _settings_out()


@router.patch("/settings", response={200: SettingsOut, **BODY_ERRORS}, tags=["settings"])
def update_settings(request: HttpRequest, payload: SettingsPatch) -> dict:
    """Staff: set the Model Cache Path (blank = HF default), the allowed output and dataset roots, and the
    per-user upload quota in bytes (0 = no limit)."""
    require_staff(request, "change the portal settings")
    updates = payload.model_dump(exclude_unset=True)
    problems = []
    if "model_cache_path" in updates:
        updates["model_cache_path"] = updates["model_cache_path"].strip()
        if problem := edits.cache_path_problem(updates["model_cache_path"]):
            problems.append(problem)
    for field in ("allowed_output_roots", "allowed_dataset_roots"):
        if field in updates:
            updates[field], found = edits.clean_roots(field, updates[field])
            problems.extend(found)
    if problems:
        raise ApiError(422, problems)
    with transaction.atomic():
        row = services.portal_settings()
        before = {field: getattr(row, field) for field in updates}
        for field, value in updates.items():
            setattr(row, field, value)
        row.updated_by = request.auth
        row.save()
        if changes := audit.diff(before, updates):
            audit.record(request.auth, "portal_settings.update", row, changes, request, via="api")
    return _settings_out()
