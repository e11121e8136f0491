"""API v1 for building on a run's result: publish its model under a name, list and unpublish published models,
and download a LoRA run's adapter as a streamed .tar.gz. Each call adapts input and output to the services in
projects.publishing.services and projects.publishing.adapter_archive."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema
from ninja.responses import Status
from pydantic import Field

from models_registry.models import PublishedModel
from models_registry.schemas import ErrorOut, ResolutionOut, StrictBody
from mtm.api_errors import ApiError
from mtm.audit import Actor, Channel
from mtm.request_limits import Busy, busy_response, held_while_sent
from projects.access import can_view
from projects.models import TrainingRun
from projects.publishing.adapter_archive import AdapterUnavailable, adapter_archive
from projects.publishing.services import PublishRefused, check_published_folder, publish_run, unpublish
from projects.schemas import StoredText

router = Router(tags=["published models"])
MAX_ID = 2**63 - 1


class PublishIn(StrictBody):
    model_name: str = Field(max_length=200, description="The name to publish under, e.g. team/support-bot-v2.")
    note: StoredText = ""


class PublishedModelOut(Schema):
    id: int
    model_name: str
    path: str
    run_id: int | None
    project_name: str
    method: str
    base_model: str
    base_revision: str
    dataset_sha256: str
    note: str
    published_by: str | None
    published_at: datetime
    validation: ResolutionOut | None = None


def published_dict(published: PublishedModel, *, validate: bool = False) -> dict:
    return {
        "id": published.pk,
        "model_name": published.model_name,
        "path": published.path,
        "run_id": published.run_id,
        "project_name": published.project_name,
        "method": published.method,
        "base_model": published.base_model,
        "base_revision": published.base_revision,
        "dataset_sha256": published.dataset_sha256,
        "note": published.note,
        "published_by": published.published_by.get_username() if published.published_by else None,
        "published_at": published.published_at,
        "validation": check_published_folder(published) if validate else None,
    }


def _refused(exc: PublishRefused) -> ApiError:
    return ApiError(exc.status, exc.problems)


def _run_or_404(run_id: int) -> TrainingRun:
    run = None
    if 0 < run_id <= MAX_ID:
        run = TrainingRun.objects.select_related("project", "project__owner").filter(pk=run_id).first()
    if run is None:
        raise ApiError.single(
            404, "not_found", f"No run with id {run_id}.", "A project's runs are at GET /api/v1/projects/{id}/runs."
        )
    return run


def _published_or_404(published_id: int) -> PublishedModel:
    published = None
    if 0 < published_id <= MAX_ID:
        rows = PublishedModel.objects.select_related("published_by", "run__project__owner")
        published = rows.filter(pk=published_id).first()
    if published is None:
        raise ApiError.single(
            404,
            "not_found",
            f"No published model with id {published_id}.",
            "List them with GET /api/v1/published-models.",
        )
    return published


ERRORS = {status: ErrorOut for status in (401, 403, 404, 409, 422)}
BODY_ERRORS = {**ERRORS, 413: ErrorOut}  # a JSON body over the size limit


@router.post(
    "/runs/{run_id}/publish",
    response={201: PublishedModelOut, **BODY_ERRORS},
    operation_id="projects_publish_api_publish",
)
def publish(request: HttpRequest, run_id: int, payload: PublishIn) -> Status:
    """Publish a succeeded run's model under `model_name` (owner of its project or staff). It then resolves with
    source "portal" and can be the base model of another project. A LoRA run publishes its merged folder.
    Refused: 403 not yours; 409 the name is an override's, a cache model's or already published; 422 the run has
    not succeeded, has no merged model, or its folder fails the format checks."""
    run = _run_or_404(run_id)
    try:
        published = publish_run(run, payload.model_name, actor=Actor.of(request, Channel.API), note=payload.note)
    except PublishRefused as exc:
        raise _refused(exc) from None
    return Status(201, published_dict(published, validate=True))


@router.get(
    "/published-models",
    response={200: list[PublishedModelOut], **ERRORS},
    operation_id="projects_publish_api_list_published",
)
def list_published(request: HttpRequest) -> list[dict]:
    """Every published model (any member may train on them)."""
    return [published_dict(p) for p in PublishedModel.objects.select_related("published_by")]


@router.get(
    "/published-models/{published_id}",
    response={200: PublishedModelOut, **ERRORS},
    operation_id="projects_publish_api_get_published",
)
def get_published(request: HttpRequest, published_id: int) -> dict:
    return published_dict(_published_or_404(published_id), validate=True)


@router.delete(
    "/published-models/{published_id}",
    response={204: None, **ERRORS},
    operation_id="projects_publish_api_delete_published",
)
def delete_published(request: HttpRequest, published_id: int) -> Status:
    """Unpublish: the name stops resolving; the run's files stay on disk. Staff, its publisher or the owner of the
    run's project."""
    try:
        unpublish(_published_or_404(published_id), actor=Actor.of(request, Channel.API))
    except PublishRefused as exc:
        raise _refused(exc) from None
    return Status(204, None)


@router.get(
    "/runs/{run_id}/adapter.tar.gz",
    response={200: None, **ERRORS, 429: ErrorOut},
    operation_id="projects_publish_api_download_adapter",
)
def download_adapter(request: HttpRequest, run_id: int):
    """A succeeded LoRA run's adapter (adapter files, tokenizer files, manifest) as a streamed .tar.gz; any member.
    Links and hard-linked files in the run's folder are left out. A download holds one of the member's
    MTM_EXPENSIVE_REQUESTS_PER_MEMBER slots while it streams: beyond them, 429 with Retry-After."""
    run = _run_or_404(run_id)
    if not can_view(request.auth, run.project):
        raise ApiError.single(403, "permission_denied", "Only signed-in, active members may download adapters.", "")
    try:
        return held_while_sent(request.auth, lambda: _archive_response(run))
    except Busy as busy:
        return busy_response(busy)


def _archive_response(run: TrainingRun) -> HttpResponse:
    try:
        archive = adapter_archive(run)
    except AdapterUnavailable as exc:
        raise ApiError(exc.status, [exc.problem]) from None
    return archive.response()
