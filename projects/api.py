"""The projects API: projects CRUD, dataset uploads, starting, watching and cancelling runs.

Mounted after the registry router (see mtm/api.py), so the registry's fixed /projects/... paths win over
/projects/{project_id}. Every member may read; only a project's owner or staff may change it or its runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db.models import OuterRef, ProtectedError, Subquery
from django.http import HttpRequest, JsonResponse
from ninja import File, Form, Query, Router
from ninja.files import UploadedFile
from ninja.responses import Status

from models_registry.lookup import dataset_roots, resolve_model
from models_registry.lookup import validate_output_dir as lookup_output_dir
from models_registry.outputs import OutputDirCheck
from models_registry.schemas import ErrorOut, OutputDirOut, ValidateOutputDirIn
from models_registry.template_sandbox import TEMPLATE_LIMIT_CODES
from mtm.api_errors import ApiError, error_body
from mtm.audit import Actor, Channel
from mtm.request_limits import Busy, expensive_request
from mtm.shared.problems import Problem
from projects import services
from projects.access import can_manage
from projects.datasets import DatasetError, DatasetReport, check_dataset_path
from projects.datasets.report import read_dataset
from projects.datasets.token_stats import apply_count, request_count
from projects.datasets.uploads import ReceivedUpload, discard_refused, receive_upload
from projects.models import TrainingProject, TrainingRun
from projects.ownership import output_dir_conflicts
from projects.runs import services as run_services
from projects.runs.compare import CompareRefused, compare, comparison_dict
from projects.runs.state_machine import CancelOutcome
from projects.schemas import (
    ComparisonOut,
    DatasetUploadOut,
    MaxSeqLength,
    ProjectDatasetOut,
    ProjectErrorOut,
    ProjectIn,
    ProjectOut,
    ProjectPatch,
    RunOut,
    RunStartIn,
    RunStatusName,
    StoredText,
)
from projects.serializers import project_dict, run_dict

router = Router(tags=["projects"])
MAX_ID = 2**63 - 1
UPLOAD_FIELD = "file"
NO_RESUME = RunStartIn()


def _errors(*statuses: int) -> dict[int, type[ProjectErrorOut]]:
    """401 and 422 can answer any call (no credentials; a path, query or body of the wrong type)."""
    return {status: ProjectErrorOut for status in (401, 422, *statuses)}


READ = _errors(404)
WRITE = _errors(403, 404, 413)
UPLOAD = _errors(400, 403, 404, 413)  # 400: a multipart body over Django's field or file count limits


def _problems(check: services.ProjectCheck) -> list[dict[str, Any]]:
    return [{**p.model_dump(), "field": field} for field, problems in check.errors.items() for p in problems]


def _refused(check: services.ProjectCheck) -> ApiError:
    errors = _problems(check)
    detail = errors[0]["message"] if len(errors) == 1 else f"{len(errors)} problems with the project; see errors."
    return ApiError(422, errors, detail)


def _project_or_404(project_id: int) -> TrainingProject:
    rows = TrainingProject.objects.select_related("owner")
    project = rows.filter(pk=project_id).first() if 0 < project_id <= MAX_ID else None
    if project is None:
        raise ApiError.single(
            404, "not_found", f"No project with id {project_id}.", "List the projects with GET /api/v1/projects."
        )
    return project


def _run_or_404(run_id: int) -> TrainingRun:
    rows = TrainingRun.objects.select_related("project", "project__owner")
    run = rows.filter(pk=run_id).first() if 0 < run_id <= MAX_ID else None
    if run is None:
        raise ApiError.single(
            404, "not_found", f"No run with id {run_id}.", "A project's runs are at GET /api/v1/projects/{id}/runs."
        )
    return run


def _require_owner(request: HttpRequest, project: TrainingProject, what: str) -> None:
    if not can_manage(request.auth, project):
        raise ApiError.single(
            403,
            "permission_denied",
            f"Only the owner ({project.owner.get_username()}) or staff can {what} project '{project.name}'.",
            "Ask the owner or a staff member to do it, or create a project of your own.",
        )


# --- projects --------------------------------------------------------------------------------------------------


@router.get("/projects", response={200: list[ProjectOut], **_errors(400)})  # 400: too many query parameters
def list_projects(
    request: HttpRequest, owner: StoredText | None = None, status: RunStatusName | None = None
) -> list[dict]:
    """Every project of the team, newest first; ?owner= a username, ?status= the status of the last run."""
    latest = TrainingRun.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-id")
    projects = TrainingProject.objects.select_related("owner").annotate(last_run_pk=Subquery(latest.values("pk")[:1]))
    if owner is not None:
        projects = projects.filter(owner__username=owner)
    if status is not None:
        projects = projects.annotate(last_status=Subquery(latest.values("status")[:1])).filter(last_status=status)
    projects = list(projects)
    runs = TrainingRun.objects.in_bulk([p.last_run_pk for p in projects if p.last_run_pk])
    return [project_dict(p, last_run=runs.get(p.last_run_pk)) for p in projects]


@router.post("/projects", response={201: ProjectOut, **_errors(403, 413, 429)})
def create_project(request: HttpRequest, payload: ProjectIn) -> Status | JsonResponse:
    """Create a project; refused (422) with every problem, each naming its `field`, unless its model, output
    directory, dataset and hyperparameters validate.

    The dataset must validate too: to train on a file of your own, upload it first with `POST /api/v1/datasets`
    (multipart field `file`) and send the `dataset_path` it answers. `POST /api/v1/projects/{id}/dataset`
    replaces an existing project's dataset with an upload.

    The dataset and the eval file are read as far as a check reads them; their token lengths are counted by a
    worker (sent again, or as a dataset upload, they are answered). More saves or checks at once than
    MTM_EXPENSIVE_REQUESTS_PER_MEMBER: 429 with Retry-After.
    """
    actor = Actor.of(request, Channel.API)
    try:
        with expensive_request(actor.user):
            project = services.create_project(payload.model_dump(), actor=actor)
    except Busy as busy:
        return _busy(busy)
    except services.ProjectInvalid as exc:
        raise _refused(exc.check)
    return Status(201, project_dict(project, last_run=None))


# The registry's error body and the operation id this operation had in models_registry/api.py: the schema is unchanged.
@router.post(
    "/projects/validate-output-dir",
    response={200: OutputDirOut, **{status: ErrorOut for status in (401, 403, 404, 409, 413, 422)}},
    operation_id="models_registry_api_validate_output_dir",
)
def validate_output_dir(request: HttpRequest, payload: ValidateOutputDirIn) -> OutputDirCheck:
    """Is this a directory training may write to, for the caller? Absolute, inside an allowed root, writable, with
    room, and not a folder of another member's project (the same rule as saving a project and the form's check)."""
    check = lookup_output_dir(payload.output_directory)
    if check.valid:
        check.errors.extend(output_dir_conflicts(check.path or "", request.auth))
    return check


@router.get("/projects/{project_id}", response={200: ProjectOut, **READ})
def get_project(request: HttpRequest, project_id: int) -> dict:
    return project_dict(_project_or_404(project_id))


@router.patch("/projects/{project_id}", response={200: ProjectOut, **WRITE, 429: ProjectErrorOut})
def update_project(request: HttpRequest, project_id: int, payload: ProjectPatch) -> dict | JsonResponse:
    """Change some fields (hyperparameters are merged); the whole project is checked again, as on create (429
    with Retry-After beyond the member's cap on saves and checks at once)."""
    project = _project_or_404(project_id)
    _require_owner(request, project, "change")
    actor = Actor.of(request, Channel.API)
    try:
        with expensive_request(actor.user):
            services.update_project(project, payload.model_dump(exclude_unset=True), actor=actor)
    except Busy as busy:
        return _busy(busy)
    except services.ProjectInvalid as exc:
        raise _refused(exc.check)
    return project_dict(project)


@router.delete("/projects/{project_id}", response={204: None, **_errors(403, 404, 409)})
def delete_project(request: HttpRequest, project_id: int) -> Status:
    """Delete a project and its runs' records (not its output directory); refused while a run is live."""
    project = _project_or_404(project_id)
    _require_owner(request, project, "delete")
    try:
        services.delete_project(project, actor=Actor.of(request, Channel.API))
    except services.ProjectBusy as exc:
        live = exc.run
        hint = f"Cancel it first (POST /api/v1/runs/{live.pk}/cancel) and delete the project once it has ended."
        raise ApiError.single(409, exc.problem.code, exc.problem.message, hint)
    except ProtectedError as exc:
        raise ApiError.single(409, "project_in_use", f"Project '{project.name}' is still referenced: {exc}.", "")
    return Status(204, None)


# --- datasets --------------------------------------------------------------------------------------------------


def _store(request: HttpRequest, file: UploadedFile) -> ReceivedUpload:
    try:
        return receive_upload(Actor.of(request, Channel.API), file, file.name or "")
    except DatasetError as exc:
        raise ApiError(422, [{**p.model_dump(), "field": UPLOAD_FIELD} for p in exc.problems])


def _discard(request: HttpRequest, received: ReceivedUpload) -> None:
    """Remove a refused upload (its folder and its record) unless it is an earlier copy or a project's dataset."""
    discard_refused(received, actor=Actor.of(request, Channel.API))


def _field_of(problem: Problem) -> str:
    """A chat template past its limits is a problem of the model named in the upload, not of the file."""
    return "model_name" if problem.code in TEMPLATE_LIMIT_CODES else UPLOAD_FIELD


def _report_for(
    request: HttpRequest, path: Path, model_name: str | None, revision: str | None, max_seq_length: int | None
) -> DatasetReport:
    """The bounded read of the file; its token lengths when a worker has counted them, else "pending" (asked for
    once here: sending the same file again answers them)."""
    located = check_dataset_path(str(path), dataset_roots())
    if not located.valid:
        return DatasetReport(path=str(path), errors=located.errors)
    read = read_dataset(located.path)
    count = None
    if model_name and (resolution := resolve_model(model_name, revision or None)).valid:
        count = request_count(
            read,
            located.path,
            Actor.of(request, Channel.API).user,
            resolution,
            model_name=model_name,
            revision=revision or "",
            max_seq_length=max_seq_length,
            max_prompt_length=None,
            chat_template="",
        )
    return apply_count(read.report, count)


def _busy(busy: Busy) -> JsonResponse:
    response = JsonResponse(error_body([busy.as_problem().model_dump()]), status=429)
    response["Retry-After"] = str(busy.retry_after)
    return response


@router.post("/datasets", response={200: DatasetUploadOut, **UPLOAD, 429: ProjectErrorOut}, tags=["datasets"])
def upload_dataset(
    request: HttpRequest,
    file: File[UploadedFile],
    model_name: Form[str | None] = None,
    revision: Form[str | None] = None,
    max_seq_length: Form[MaxSeqLength | None] = None,
) -> dict:
    """Upload a dataset (multipart field `file`: .jsonl, .json or .csv) to use in `POST /api/v1/projects`.

    Answers its stored `dataset_path` and a report: format, rows, the first rows and warnings of the start of the
    file. With `model_name` (a model that resolves) a worker counts the token lengths (against `max_seq_length`
    when given): `token_stats_state` is "pending" until it has, then sending the same file again (it is not stored
    twice) answers `token_stats` at once. A file that cannot be trained on is refused (422) with each problem, rows
    named by number. More checks at once than MTM_EXPENSIVE_REQUESTS_PER_MEMBER: 429 with Retry-After.
    """
    try:
        with expensive_request(Actor.of(request, Channel.API).user):
            received = _store(request, file)
            report = _report_for(request, received.path, model_name, revision, max_seq_length)
    except Busy as busy:
        return _busy(busy)
    if not report.valid:
        _discard(request, received)
        raise ApiError(422, [{**p.model_dump(), "field": _field_of(p)} for p in report.errors])
    return {"dataset_path": report.path, "reused": received.reused, "report": report}


@router.post("/projects/{project_id}/dataset", response={200: ProjectDatasetOut, **UPLOAD, 429: ProjectErrorOut})
def upload_project_dataset(request: HttpRequest, project_id: int, file: File[UploadedFile]) -> dict | JsonResponse:
    """Replace the project's dataset with an upload (multipart field `file`); checked against the project's model
    and max sequence length. Refused (422) with every problem, and the project left as it was, when it does
    not validate. The report's token lengths are a worker's count: `token_stats_state` is "pending" until it has
    counted them (sending the same file again answers them). 429 with Retry-After beyond the member's cap."""
    project = _project_or_404(project_id)
    _require_owner(request, project, "change the dataset of")
    actor = Actor.of(request, Channel.API)
    try:
        with expensive_request(actor.user):
            received = _store(request, file)
            try:
                check = services.update_project(project, {"dataset_path": str(received)}, actor=actor)
            except services.ProjectInvalid as exc:
                _discard(request, received)
                raise _refused(exc.check) from None
    except Busy as busy:
        return _busy(busy)
    report = check.dataset
    return {
        "dataset_path": project.dataset_path,
        "reused": received.reused,
        "report": report or DatasetReport(path=project.dataset_path),
        "project": project_dict(project),
    }


# --- runs ------------------------------------------------------------------------------------------------------


@router.post("/projects/{project_id}/runs", response={201: RunOut, **_errors(403, 404, 409, 413)}, tags=["runs"])
def start_project_run(request: HttpRequest, project_id: int, payload: RunStartIn = NO_RESUME) -> Status:
    """Queue a training run (body optional). Each run writes in a folder of its own, `run-<id>/` inside the
    project's output directory, and keeps a copy of the project's settings (`config`).
    `{"resume_from_run": id}` continues from that run's latest complete checkpoint (a run of this project);
    `{"resume": true}` from the project's latest run's. Refused (409) while another live run writes to the same
    output directory; a resume is refused (422) when that run left no complete checkpoint or nothing is left to
    train (its step has reached max_steps)."""
    project = _project_or_404(project_id)
    _require_owner(request, project, "start runs of")
    source = None
    if payload.resume_from_run is not None:
        source = TrainingRun.objects.filter(pk=payload.resume_from_run).first()
        if source is None:
            raise ApiError.single(
                422,
                "no_such_run",
                f"Cannot resume: there is no run {payload.resume_from_run}.",
                f"List the project's runs with GET /api/v1/projects/{project.pk}/runs and pick one of them.",
            )
    try:
        run = run_services.start_run(
            project, actor=Actor.of(request, Channel.API), resume=payload.resume, resume_from=source
        )
    except run_services.RunRefused as exc:
        raise ApiError(409 if exc.conflict else 422, [exc.problem])
    run.refresh_from_db()  # queuing happens on commit and may already have failed (broker down)
    return Status(201, run_dict(run))


@router.get("/projects/{project_id}/runs", response={200: list[RunOut], **READ}, tags=["runs"])
def list_project_runs(request: HttpRequest, project_id: int) -> list[dict]:
    """The project's runs, newest first."""
    project = _project_or_404(project_id)
    return [run_dict(run) for run in project.runs.order_by("-created_at", "-id")]


@router.get(
    "/runs/compare", response={200: ComparisonOut, **_errors(400, 404)}, tags=["runs"]
)  # 400: too many query parameters
def compare_runs(
    request: HttpRequest,
    runs: str = Query("", description="2 to 5 run ids, e.g. 12,15 (or runs=12&runs=15); any projects you can see."),
) -> dict:
    """Runs side by side: curves (training and eval loss points), the settings that differ, final metrics, throughput,
    duration and validation. 422 for a selection of the wrong size or a malformed id; 404 for a run that does not
    exist or that you may not see (the same answer for both)."""
    try:
        return comparison_dict(compare(request.user, request.GET.getlist("runs")))
    except CompareRefused as refused:
        raise ApiError(refused.status, [refused.problem])


@router.get("/runs/{run_id}", response={200: RunOut, **READ}, tags=["runs"])
def get_run(request: HttpRequest, run_id: int) -> dict:
    """Status, progress, metrics, log tail and validation report of a run; poll it while the run is live."""
    return run_dict(_run_or_404(run_id))


@router.post("/runs/{run_id}/cancel", response={200: RunOut, **_errors(403, 404, 409)}, tags=["runs"])
def cancel_run(request: HttpRequest, run_id: int) -> dict:
    """Cancel a run: a queued one ends at once; a training one stops at its next step, saves a checkpoint and
    ends "cancelled" (cancel_requested is true until then). Refused (409) when the run has already ended."""
    run = _run_or_404(run_id)
    _require_owner(request, run.project, "cancel runs of")
    if run_services.cancel_run(run, actor=Actor.of(request, Channel.API)) is CancelOutcome.ENDED:
        raise ApiError.single(
            409,
            "run_ended",
            f"Run {run.pk} has already ended ({run.status}); there is nothing to cancel.",
            f"Start a new run with POST /api/v1/projects/{run.project_id}/runs.",
        )
    return run_dict(run)
