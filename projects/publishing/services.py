"""Publishing a succeeded run's model to the registry under a name, and unpublishing it: the one way in for the
page, the API and the admin.

A published name resolves with source "portal" (models_registry.resolution) to the run's model folder: the run
folder of a full fine-tune, the merged/ folder of a LoRA run (an adapter alone is no model to train on). The
facts shown on the model page (run, base model and revision, dataset sha256, method) are copied from the run's
manifest when it is published. Unpublishing removes the name only; the run's files stay where they are.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from models_registry.cache_claims import cached_models
from models_registry.lookup import current_cache_dir
from models_registry.models import ModelOverride, PublishedModel
from models_registry.names import name_error, repo_folder_name
from models_registry.published import (
    PUBLISH_ACTION,
    UNPUBLISH_ACTION,
    first_word_key,
    last_event_alike,
    name_key,
    organisation_problem,
    part_key,
    reads_the_same,
    team_organisations,
)
from models_registry.resolution import Resolution, resolve
from mtm import audit
from mtm.audit import Actor
from mtm.shared.nofollow import open_dir_nofollow
from mtm.shared.owned_files import open_subdir
from mtm.shared.problems import Problem
from projects.access import can_manage
from projects.models import RunStage, RunStatus, TrainingRun
from projects.runs.folder import RunFolderRefused, open_run_folder, published_folder_problem
from projects.runs.manifest import ManifestInvalid, ManifestMissing, read_manifest, written_manifest
from projects.trainer.outputs import MANIFEST_NAME, MERGED_DIR

PUBLISH_HINT = (
    "Put the run's own folder back at that path (the one it trained in; `ls -lid` shows a folder's inode), or train "
    "the project again and publish that run."
)
PUBLISHED_FIELDS = (
    "model_name",
    "path",
    "project_name",
    "method",
    "base_model",
    "base_revision",
    "dataset_sha256",
    "note",
)


class PublishRefused(Exception):
    """`status`: 403 not allowed, 409 the name is taken, 422 the name or the run cannot be published."""

    def __init__(self, problems: list[Problem], status: int = 422):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems
        self.status = status


def _refuse(code: str, message: str, hint: str, status: int = 422) -> PublishRefused:
    return PublishRefused([Problem(code, message, hint)], status)


def _name_clash(name: str) -> PublishRefused | None:
    """The name reads as (name_key) an override's, a cache model's or a published model's: a near-twin would mislead
    everyone who picks a base model by its name. A cache folder holding no model holds no name (cache_claims)."""
    key = name_key(name)
    overrides = ModelOverride.objects.order_by("model_name").only("model_name", "path")
    override = next((o for o in overrides.iterator() if name_key(o.model_name) == key), None)
    if override is not None:
        return _refuse(
            "model_name_taken",
            f"{reads_the_same(name, override.model_name)}'{override.model_name}' is the name of a Model Override "
            f"(→ {override.path}): a published model may not take it.",
            "Choose another name, e.g. team/<project>-v2.",
            409,
        )
    cache_dir, _ = current_cache_dir()
    cached_name = next((n for n in sorted(cached_models(cache_dir)) if name_key(n) == key), None)
    if cached_name is not None:
        return _refuse(
            "model_name_taken",
            f"{reads_the_same(name, cached_name)}'{cached_name}' names a model in the Hugging Face cache "
            f"({cache_dir / repo_folder_name(cached_name)}): publishing under it would shadow that model for every "
            "project that trains on it.",
            "Choose a name of your own, e.g. team/<project>-v2.",
            409,
        )
    published = PublishedModel.objects.select_related("run").order_by("model_name")
    taken = next((p for p in published.iterator() if name_key(p.model_name) == key), None)
    if taken is not None:
        source = f"run {taken.run_id}" if taken.run_id else "a run since deleted"
        return _refuse(
            "model_name_taken",
            f"{reads_the_same(name, taken.model_name)}'{taken.model_name}' is already published (from {source} of "
            f"project '{taken.project_name}').",
            "Choose another name, or unpublish that one first (its files stay on disk).",
            409,
        )
    return None


def _read_manifest(folder_fd: int, run: TrainingRun) -> dict[str, Any]:
    try:
        return read_manifest(folder_fd)
    except ManifestMissing:
        raise _refuse(
            "manifest_missing",
            f"Run {run.pk} has no readable {MANIFEST_NAME} in {run.run_folder}: its output is gone or incomplete.",
            "Publish a succeeded run whose files are on disk.",
        ) from None
    except ManifestInvalid:
        raise _refuse(
            "manifest_invalid",
            f"Run {run.pk}'s {MANIFEST_NAME} is not the JSON object the trainer writes.",
            "Publish a run whose output was not changed since it was trained.",
        ) from None


def _not_succeeded(run: TrainingRun) -> PublishRefused:
    """A run that did not succeed; one whose trainer wrote its whole result before the run failed (a worker lost
    after the final save, or a run from before such a trainer went on to validation) is told apart."""
    manifest = None
    if run.status == RunStatus.FAILED and run.stage_failed == RunStage.TRAIN and os.path.isabs(run.run_folder):
        try:
            folder_fd = open_dir_nofollow(run.run_folder)
        except OSError:
            folder_fd = None
        if folder_fd is not None:
            try:
                manifest = written_manifest(folder_fd)
            finally:
                os.close(folder_fd)
    if manifest is None:
        return _refuse(
            "run_not_succeeded",
            f"Run {run.pk} is {run.status}: only a run that succeeded (trained and validated) can be published.",
            "Publish a succeeded run of the project.",
        )
    return _refuse(
        "run_not_succeeded",
        f"Run {run.pk} failed at the train stage ({run.error_code}: {run.error_message}) after its trainer had "
        f"written the final model and {MANIFEST_NAME} (finished at {manifest.get('finished_at')}), so that model "
        "was never validated (loaded and asked to generate): only a validated run can be published.",
        f"Start a new run of project '{run.project.name}': a run whose trainer stops after writing its model goes "
        "on to validation, and that run can be published. To use this run's model without training again, ask "
        f"staff for a Model Override (a name of your team's organisation) that points at {run.run_folder}"
        f"{'' if (manifest['layout'].get('model_dir') or '.') == '.' else '/' + MERGED_DIR}: it is checked like any "
        "model.",
    )


def _model_folder(run: TrainingRun, manifest: dict[str, Any]) -> str:
    layout = manifest.get("layout") if isinstance(manifest.get("layout"), dict) else {}
    model_dir = layout.get("model_dir")
    if model_dir is None:
        raise _refuse(
            "adapter_not_merged",
            f"Run {run.pk} trained a LoRA adapter without merging it into the base model: there is no complete "
            "model to publish.",
            "Download the adapter from the run's page, or start a run with 'Merge after training' on and publish "
            "that one.",
        )
    if model_dir not in (".", MERGED_DIR):
        raise _refuse(
            "manifest_invalid",
            f"Run {run.pk}'s manifest names its model folder '{model_dir}', not one the trainer writes.",
            "Publish a run whose output was not changed since it was trained.",
        )
    return run.run_folder if model_dir == "." else os.path.join(run.run_folder, MERGED_DIR)


def _facts(manifest: dict[str, Any]) -> dict[str, str]:
    base = manifest.get("base_model") if isinstance(manifest.get("base_model"), dict) else {}
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    return {
        "method": str(manifest.get("method") or "")[:8],
        "base_model": str(base.get("name") or "")[:96],
        "base_revision": str(base.get("revision") or "")[:255],
        "dataset_sha256": str(dataset.get("sha256") or "")[:64],
    }


def _format_check(name: str, folder: str) -> Resolution:
    """What the resolver makes of `folder` as `name` (the format checks every model passes)."""
    cache_dir, _ = current_cache_dir()
    return resolve(name, cache_dir=cache_dir, published_path=folder)


def check_published_folder(published: PublishedModel) -> Resolution:
    """What the resolver makes of a published model's folder now: invalid (run_folder_changed) when its run's folder
    is no longer the one the worker made, else the format checks."""
    cache_dir, _ = current_cache_dir()
    problem = published_folder_problem(published.path, published.run, published.model_name)
    return resolve(published.model_name, cache_dir=cache_dir, published_path=published.path, published_problem=problem)


def check_publish(run: TrainingRun, model_name: str, *, actor: Actor, note: str = "") -> dict[str, Any]:
    """The row `publish_run` would save, or PublishRefused. Only the run project's owner and staff may publish;
    the run must have succeeded, its folders be reachable without links, the name be free (no override, cache
    model or other published model that reads the same: models_registry.published.name_key) and under an
    organisation of the team's own (not one that reads as or starts like a Hub organisation, nor a cache model's
    unless the portal recorded it as the team's, nor another member's: models_registry.published), and the folder
    pass the resolver's format checks."""
    name = model_name.strip() if isinstance(model_name, str) else model_name
    if not can_manage(actor.user, run.project):
        raise _refuse(
            "permission_denied",
            f"Only the owner of project '{run.project.name}' ({run.project.owner.get_username()}) or staff may "
            f"publish its runs.",
            "Ask the owner to publish it, or train a project of your own.",
            403,
        )
    if problem := name_error(name):
        raise PublishRefused([problem])
    if run.status != RunStatus.SUCCEEDED:
        raise _not_succeeded(run)
    if clash := _name_clash(name) or _freed_name_held(name, actor.user):
        raise clash
    username = actor.user.get_username()
    if problem := organisation_problem(name, current_cache_dir()[0], username, team_organisations()):
        raise PublishRefused([problem])
    if clash := _another_members_organisation(name, actor.user):
        raise clash
    try:
        folder_fd = open_run_folder(run, PUBLISH_HINT)
    except RunFolderRefused as refused:
        raise PublishRefused([refused.problem]) from None
    try:
        manifest = _read_manifest(folder_fd, run)
        folder = _model_folder(run, manifest)
        if folder != run.run_folder:
            os.close(open_subdir(folder_fd, MERGED_DIR))
    except OSError:
        raise _refuse(
            "run_files_missing",
            f"Run {run.pk}'s model folder {folder} is missing or is a link.",
            "Publish a run whose files are on disk where it wrote them.",
        ) from None
    finally:
        os.close(folder_fd)
    resolution = _format_check(name, folder)
    if not resolution.valid:
        raise PublishRefused(resolution.errors)
    values = {
        "model_name": name,
        "path": folder,
        "project_name": run.project.name,
        "note": str(note or "")[:2000],
        **_facts(manifest),
    }
    return values


def _another_members_organisation(name: str, user: Any) -> PublishRefused | None:
    """'bob/my-model' published by alice would pass for bob's: a member's username is their own organisation."""
    organisation = name.split("/", 1)[0]
    keys = {part_key(organisation), first_word_key(organisation)}  # 'bob', 'Bob_team' and 'bob-lab' are bob's
    for username in get_user_model().objects.exclude(pk=user.pk).values_list("username", flat=True).iterator():
        if part_key(username) in keys:
            return _refuse(
                "organisation_is_a_member",
                f"'{name}' would be published under '{organisation}', which is the name of the member {username}: "
                "others would take it for their model.",
                f"Publish under your team's own organisation or your own name, e.g. {user.get_username()}/"
                f"{name.split('/', 1)[-1]}.",
            )
    return None


def _freed_name_held(name: str, user: Any) -> PublishRefused | None:
    """A name once published and since unpublished stays its first holders', in every spelling that reads the same
    (name_key): projects and conversations may still name it, so another member publishing under it would swap
    their base model without a word. Its publisher, the owner of its run's project and staff may publish under it
    again."""
    unpublished = last_event_alike(UNPUBLISH_ACTION, name)
    if unpublished is None or user.is_staff:
        return None
    held = (unpublished.changes.get("model_name") or [name])[0]
    published = last_event_alike(PUBLISH_ACTION, held)
    publisher = published.actor if published is not None else None
    run_id = (unpublished.changes.get("run") or [None])[0]
    run = TrainingRun.objects.select_related("project").filter(pk=run_id).first() if run_id else None
    if (publisher is not None and publisher.pk == user.pk) or (run is not None and can_manage(user, run.project)):
        return None
    who = publisher.get_username() if publisher is not None else "another member"
    return _refuse(
        "model_name_held",
        f"{reads_the_same(name, held)}'{held}' was published by {who}{f' from run {run_id}' if run_id else ''} and "
        "unpublished since: projects may still name it as their base model, so only its publisher, the owner of "
        "that run's project or staff may publish under it (or a name that reads the same) again.",
        "Choose a name of your own, e.g. team/<project>-v2; or ask them to publish under it.",
        409,
    )


def publish_run(run: TrainingRun, model_name: str, *, actor: Actor, note: str = "") -> PublishedModel:
    """Publish the model `run` trained under `model_name` (check_publish says when it is refused); audited."""
    values = check_publish(run, model_name, actor=actor, note=note)
    name = values["model_name"]
    try:
        with transaction.atomic():
            # Again under the write lock (SQLite takes it at BEGIN): a name that reads the same may have been
            # published while this one was checked, and only the exact text is a unique column.
            if clash := _name_clash(name) or _freed_name_held(name, actor.user):
                raise clash
            published = PublishedModel.objects.create(run=run, published_by=actor.authenticated_user, **values)
            audit.record_change(actor, PUBLISH_ACTION, published, {"run": [None, run.pk], **_as_changes(values)})
    except IntegrityError:  # the same name published at the same moment
        raise _name_clash(name) or _refuse("model_name_taken", f"'{name}' is already published.", "", 409) from None
    return published


def _as_changes(values: dict[str, Any], removed: bool = False) -> dict[str, list[Any]]:
    return {k: [v, None] if removed else [None, v] for k, v in values.items()}


def can_unpublish(user: Any, published: PublishedModel) -> bool:
    """Staff, whoever published it, and whoever may manage the run's project."""
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return False
    if user.is_staff or (published.published_by_id is not None and published.published_by_id == user.pk):
        return True
    return published.run is not None and can_manage(user, published.run.project)


def unpublish(published: PublishedModel, *, actor: Actor) -> None:
    """Remove the name from the registry; the run's files are never touched."""
    if not can_unpublish(actor.user, published):
        raise _refuse(
            "permission_denied",
            f"Only staff, its publisher or the owner of the run's project may unpublish '{published.model_name}'.",
            "Ask one of them to unpublish it.",
            403,
        )
    with transaction.atomic():
        # What was unpublished, from which run: resolving the name later says so (models_registry.published).
        values = {"run": published.run_id, **{name: getattr(published, name) for name in PUBLISHED_FIELDS}}
        audit.record_change(actor, UNPUBLISH_ACTION, published, _as_changes(values, removed=True))
        published.delete()


def published_of(run: TrainingRun) -> list[PublishedModel]:
    return list(PublishedModel.objects.filter(run=run).order_by("model_name"))


__all__ = ["PublishRefused", "can_unpublish", "publish_run", "published_of", "unpublish"]
