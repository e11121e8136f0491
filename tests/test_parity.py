"""One way in: every change made through a page (or the admin) and through the API leaves the same state and the
same audit record. Each operation runs twice on the same starting point (rolled back in between): once as a
person posting the page's form, once as a script calling the API with a bearer token."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from models_registry.models import ModelOverride, PortalSettings
from mtm.audit import Actor, Channel
from mtm.models import ApiToken, AuditEvent
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.services import create_project, project_data
from tests.api_client import call
from tests.clients import browser_defaults, secure_client
from tests.pipeline_helpers import QA_ROWS, write_jsonl

pytestmark = pytest.mark.django_db
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?")
RUN_FOLDER = re.compile(r"run-\d+")


@dataclass
class World:
    root: Path
    owner: User
    staff: User
    tokens: dict[str, str]  # username -> raw bearer token
    project: TrainingProject
    other_model: str
    revision: str
    override_folder: Path

    def page(self, user: User):
        return secure_client(user)

    def api(self, method: str, path: str, body: Any = None, user: User | None = None):
        user = user or self.owner
        return call(secure_client(), method, path, body, self.tokens[user.username])


@pytest.fixture
def world(portal_roots, tiny_llama_in_cache, tiny_llama_dir, hf_cache, copy_of_tiny_llama) -> World:
    from models_registry.demo import install_into_cache

    root = portal_roots
    snapshot = tiny_llama_in_cache[1]
    install_into_cache(tiny_llama_dir, hf_cache, "test-org/tiny-llama-two")
    write_jsonl(root / "datasets" / "more.jsonl", QA_ROWS * 2)
    owner = User.objects.create_user("alice")
    staff = User.objects.create_superuser("boss")
    tokens = {user.username: ApiToken.issue(user, "tests")[1] for user in (owner, staff)}
    data = {
        "name": "demo",
        "model_name": tiny_llama_in_cache[0],
        "dataset_path": str(root / "datasets" / "qa.jsonl"),
        "output_directory": str(root / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 16},
        "validation_prompt": "Say hello:",
    }
    project = create_project(data, actor=Actor(owner, Channel.CLI))
    AuditEvent.objects.all().delete()
    return World(root, owner, staff, tokens, project, "test-org/tiny-llama-two", snapshot.name, copy_of_tiny_llama)


# --- what a browser posts ----------------------------------------------------------------------------------------


def edit_form(project: TrainingProject, **changes: str) -> dict[str, str]:
    """The edit form as a browser posts it untouched (a ticked box as "on", an unticked one not at all), changed."""
    return {**browser_defaults(project), **changes}


def override_form(override: ModelOverride, **changes: str) -> dict[str, str]:
    values = {"model_name": override.model_name, "path": override.path, "note": override.note}
    values.update({name: "on" for name in ("enabled", "trust_remote_code") if getattr(override, name)})
    return {**values, **changes}


# --- the operations ----------------------------------------------------------------------------------------------


@dataclass
class Operation:
    setup: Callable[[World], Any]
    page: Callable[[World, Any], Any]
    api: Callable[[World, Any], Any]
    state: Callable[[World, Any], Any]
    page_channel: Channel = Channel.PAGE
    changed: frozenset[str] | None = None  # the fields the audit record must list, exactly


def nothing(world: World) -> None:
    return None


def project_state(world: World, _target: Any = None) -> dict:
    project = TrainingProject.objects.filter(owner=world.owner).order_by("-id").first()
    if project is None:
        return {}
    facts = {"owner": project.owner.username, "format": project.dataset_format, "sha": project.dataset_sha256}
    return {**project_data(project), **facts}


def runs_state(world: World, _target: Any = None) -> list[dict]:
    fields = ("status", "resume", "cancel_requested", "started_by__username", "run_folder", "project__name")
    fields += ("resume_source", "resumed_from", "config")
    rows = list(TrainingRun.objects.order_by("id").values("id", *fields))
    # Each door makes its runs anew, and PostgreSQL does not hand a rolled-back id out again: runs are compared by
    # their place in the list, their folders (run-<id>) without the number.
    place = {row.pop("id"): index for index, row in enumerate(rows)}
    for row in rows:
        row["resume_source"] = place.get(row["resume_source"], row["resume_source"])
        for key in ("run_folder", "resumed_from"):
            row[key] = RUN_FOLDER.sub("run-<id>", row[key])
    return rows


def overrides_state(world: World, _target: Any = None) -> list[dict]:
    fields = ("model_name", "path", "enabled", "trust_remote_code", "note", "created_by__username")
    return list(ModelOverride.objects.order_by("model_name").values(*fields, "updated_by__username"))


def settings_state(world: World, _target: Any = None) -> dict:
    row = PortalSettings.load()
    fields = ("model_cache_path", "allowed_output_roots", "allowed_dataset_roots")
    return {name: getattr(row, name) for name in fields} | {"updated_by": getattr(row.updated_by, "username", None)}


def tokens_state(world: World, _target: Any = None) -> list[tuple]:
    rows = ApiToken.objects.exclude(name="tests").order_by("id")
    return [(t.user.username, t.name, t.revoked_at is None) for t in rows]


def field_update(page_value: str, api_body: dict) -> Operation:
    name = next(iter(api_body))
    page_field = name if name != "hyperparameters" else next(iter(api_body[name]))
    return Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.owner).post(
            f"/projects/{w.project.pk}/edit/", edit_form(w.project, **{page_field: page_value(w)})
        ),
        api=lambda w, _: w.api("patch", f"/projects/{w.project.pk}", api_body_for(w, api_body)),
        state=project_state,
        changed=frozenset({name}),
    )


def api_body_for(world: World, body: dict) -> dict:
    """Bodies that name world-dependent values as callables."""
    return {key: value(world) if callable(value) else value for key, value in body.items()}


def queued_run(status: RunStatus) -> Callable[[World], TrainingRun]:
    def setup(world: World) -> TrainingRun:
        return TrainingRun.objects.create(
            project=world.project, status=status, run_folder=world.project.output_directory
        )

    return setup


def with_checkpoint(world: World) -> TrainingRun:
    """A cancelled run that left a checkpoint in its own folder."""
    run = TrainingRun.objects.create(project=world.project, status=RunStatus.CANCELLED)
    run.run_folder = str(Path(world.project.output_directory) / f"run-{run.pk}")
    run.save()
    checkpoint = Path(run.run_folder) / "checkpoint-4"
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    return run


def an_override(world: World) -> ModelOverride:
    return ModelOverride.objects.create(model_name="local/llama", path=str(world.override_folder), note="ours")


def owners_token(world: World) -> ApiToken:
    return ApiToken.issue(world.owner, "laptop")[0]


def new_project_form(world: World) -> dict:
    data = {
        "name": "second",
        "description": "made twice",
        "model_name": world.project.model_name,
        "revision": "",
        "dataset_path": str(world.root / "datasets" / "more.jsonl"),
        "output_directory": str(world.root / "outputs" / "second"),
        "method": "full",
        "validation_prompt": "Hi",
    }
    form = edit_form(None, **{k: v for k, v in data.items()})
    form.update(max_steps="7", max_seq_length="32")
    api = {**data, "hyperparameters": {"max_steps": 7, "max_seq_length": 32}}
    return {"page": form, "api": api}


OPERATIONS: dict[str, Operation] = {
    "project create": Operation(
        setup=new_project_form,
        page=lambda w, forms: w.page(w.owner).post("/projects/new/", forms["page"]),
        api=lambda w, forms: w.api("post", "/projects", forms["api"]),
        state=project_state,
    ),
    "update name": field_update(lambda w: "renamed", {"name": "renamed"}),
    "update description": field_update(lambda w: "a longer story", {"description": "a longer story"}),
    "update model_name": field_update(lambda w: w.other_model, {"model_name": lambda w: w.other_model}),
    "update revision": field_update(lambda w: w.revision, {"revision": lambda w: w.revision}),
    "update dataset_path": field_update(
        lambda w: str(w.root / "datasets" / "more.jsonl"),
        {"dataset_path": lambda w: str(w.root / "datasets/more.jsonl")},
    ),
    "update output_directory": field_update(
        lambda w: str(w.root / "outputs" / "moved"), {"output_directory": lambda w: str(w.root / "outputs" / "moved")}
    ),
    "update method": field_update(lambda w: "full", {"method": "full"}),
    "update hyperparameters": field_update(lambda w: "0.001", {"hyperparameters": {"learning_rate": 0.001}}),
    "update validation_prompt": field_update(lambda w: "Tell me:", {"validation_prompt": "Tell me:"}),
    "project delete": Operation(
        setup=queued_run(RunStatus.SUCCEEDED),
        page=lambda w, _: w.page(w.owner).post(f"/projects/{w.project.pk}/delete/"),
        api=lambda w, _: w.api("delete", f"/projects/{w.project.pk}"),
        state=lambda w, _: (project_state(w), runs_state(w)),
    ),
    "project delete refused while a run is live": Operation(
        setup=queued_run(RunStatus.TRAINING),
        page=lambda w, _: w.page(w.owner).post(f"/projects/{w.project.pk}/delete/"),
        api=lambda w, _: w.api("delete", f"/projects/{w.project.pk}"),
        state=lambda w, _: (project_state(w), runs_state(w)),
    ),
    "start": Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.owner).post(f"/projects/{w.project.pk}/start/"),
        api=lambda w, _: w.api("post", f"/projects/{w.project.pk}/runs", {"resume": False}),
        state=runs_state,
    ),
    "resume": Operation(
        setup=with_checkpoint,
        page=lambda w, _: w.page(w.owner).post(f"/projects/{w.project.pk}/start/", {"resume": "1"}),
        api=lambda w, _: w.api("post", f"/projects/{w.project.pk}/runs", {"resume": True}),
        state=runs_state,
    ),
    "resume from a picked run": Operation(
        setup=with_checkpoint,
        page=lambda w, run: w.page(w.owner).post(f"/projects/{w.project.pk}/start/", {"resume_from": str(run.pk)}),
        api=lambda w, run: w.api("post", f"/projects/{w.project.pk}/runs", {"resume_from_run": run.pk}),
        state=runs_state,
    ),
    "resume refused without a checkpoint": Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.owner).post(f"/projects/{w.project.pk}/start/", {"resume": "1"}),
        api=lambda w, _: w.api("post", f"/projects/{w.project.pk}/runs", {"resume": True}),
        state=runs_state,
    ),
    "cancel a queued run": Operation(
        setup=queued_run(RunStatus.QUEUED),
        page=lambda w, run: w.page(w.owner).post(f"/projects/runs/{run.pk}/cancel/"),
        api=lambda w, run: w.api("post", f"/runs/{run.pk}/cancel"),
        state=runs_state,
    ),
    "cancel a training run": Operation(
        setup=queued_run(RunStatus.TRAINING),
        page=lambda w, run: w.page(w.owner).post(f"/projects/runs/{run.pk}/cancel/"),
        api=lambda w, run: w.api("post", f"/runs/{run.pk}/cancel"),
        state=runs_state,
    ),
    "override create": Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.staff).post(
            "/admin/models_registry/modeloverride/add/",
            {"model_name": "local/llama", "path": str(w.override_folder), "enabled": "on", "note": "ours"},
        ),
        api=lambda w, _: w.api(
            "post",
            "/model-overrides",
            {"model_name": "local/llama", "path": str(w.override_folder), "note": "ours"},
            user=w.staff,
        ),
        state=overrides_state,
        page_channel=Channel.ADMIN,
    ),
    "override update": Operation(
        setup=an_override,
        page=lambda w, o: w.page(w.staff).post(
            f"/admin/models_registry/modeloverride/{o.pk}/change/", override_form(o, path="/elsewhere", enabled="")
        ),
        api=lambda w, o: w.api(
            "patch", f"/model-overrides/{o.pk}", {"path": "/elsewhere", "enabled": False}, user=w.staff
        ),
        state=overrides_state,
        page_channel=Channel.ADMIN,
    ),
    "override delete": Operation(
        setup=an_override,
        page=lambda w, o: w.page(w.staff).post(f"/admin/models_registry/modeloverride/{o.pk}/delete/", {"post": "yes"}),
        api=lambda w, o: w.api("delete", f"/model-overrides/{o.pk}", user=w.staff),
        state=overrides_state,
        page_channel=Channel.ADMIN,
    ),
    "settings change": Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.staff).post(
            "/settings/",
            {
                "model_cache_path": PortalSettings.load().model_cache_path,
                "allowed_output_roots": f"{w.root / 'outputs'}\n{w.root / 'more-outputs'}/",
                "allowed_dataset_roots": str(w.root / "datasets"),
            },
        ),
        api=lambda w, _: w.api(
            "patch",
            "/settings",
            {
                "model_cache_path": PortalSettings.load().model_cache_path,
                "allowed_output_roots": [str(w.root / "outputs"), f"{w.root / 'more-outputs'}/"],
                "allowed_dataset_roots": [str(w.root / "datasets")],
            },
            user=w.staff,
        ),
        state=settings_state,
    ),
    "token create": Operation(
        setup=nothing,
        page=lambda w, _: w.page(w.owner).post("/tokens/", {"name": "laptop"}),
        api=lambda w, _: w.api("post", "/tokens", {"name": "laptop"}),
        state=tokens_state,
    ),
    "token revoke": Operation(
        setup=owners_token,
        page=lambda w, token: w.page(w.owner).post(f"/tokens/{token.pk}/revoke/"),
        api=lambda w, token: w.api("post", f"/tokens/{token.pk}/revoke"),
        state=tokens_state,
    ),
}

# What each channel answers: the page redirects (or shows the form again), the API answers the resource.
REFUSED = {"project delete refused while a run is live": (409, 409), "resume refused without a checkpoint": (302, 422)}


def _no_run_id(value: Any) -> Any:
    return RUN_FOLDER.sub("run-<id>", value) if isinstance(value, str) else value


def audit_records(since: int) -> list[dict]:
    records = []
    for event in AuditEvent.objects.filter(pk__gt=since).order_by("pk"):
        changes = {
            key: ["<time>" if isinstance(v, str) and ISO_TIME.fullmatch(v) else _no_run_id(v) for v in pair]
            for key, pair in event.changes.items()
        }
        actor = event.actor.username if event.actor else None
        records.append({"action": event.action, "type": event.object_type, "actor": actor, "changes": changes})
    return records


def outcome(world: World, operation: Operation, door: str) -> tuple[int, Any, Any, list[dict], set[str]]:
    """Run the operation through one door and roll it back: its status, the state before and after, and the
    audit records it left."""
    with transaction.atomic():
        target = operation.setup(world)
        before = operation.state(world, target)
        since = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        response = getattr(operation, door)(world, target)
        state = operation.state(world, target)
        records = audit_records(since)
        channels = set(AuditEvent.objects.filter(pk__gt=since).values_list("via", flat=True))
        transaction.set_rollback(True)
    world.project.refresh_from_db()
    return response.status_code, before, state, records, channels


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_page_and_api_leave_the_same_state_and_audit_record(world, name):
    operation = OPERATIONS[name]
    page_status, before, page_state, page_records, page_channels = outcome(world, operation, "page")
    api_status, api_before, api_state, api_records, api_channels = outcome(world, operation, "api")
    assert before == api_before  # the same starting point

    assert (page_status, api_status) == REFUSED.get(name, (page_status, api_status))
    if name not in REFUSED:
        assert page_status in (200, 201, 302), name
        assert api_status in (200, 201, 204), name
        assert page_state != before, f"{name}: nothing changed"
        assert len(page_records) == 1, page_records
        if operation.changed is not None:
            assert set(page_records[0]["changes"]) == operation.changed
    else:
        assert page_state == before and page_records == []
    assert page_state == api_state
    assert page_records == api_records
    assert page_channels <= {str(operation.page_channel)} and api_channels <= {str(Channel.API)}
