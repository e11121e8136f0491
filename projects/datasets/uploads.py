"""Uploaded datasets are owned: who stored each file, how much each user keeps, and removing what nobody uses.

Every upload (page or API) is stored through `receive_upload` and removed through `discard_upload`, each given
the Actor and writing the audit record; storing records the owner and enforces the per-user quota
(PortalSettings.upload_quota_bytes). Only the owner and staff may point a project at an upload.
The same bytes uploaded again by the same owner are not stored twice: the owner is given the first copy (another
member's identical file is never handed out, it stays theirs). A refused upload is removed only when this
request stored it and no project uses it. An upload no project references is removed by the periodic `cleanup_uploads` once older than
MTM_UPLOAD_GRACE_HOURS.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from models_registry.models import PortalSettings
from mtm import audit
from mtm.audit import Actor
from mtm.shared.claims import claim_form, identity_of
from mtm.shared.files import file_sha256
from mtm.shared.paths import resolved
from mtm.shared.problems import Problem
from mtm.shared.tree_removal import remove_path
from projects.datasets import DatasetError, DatasetPathCheck, store_upload, uploads_root
from projects.datasets.errors import human_bytes
from projects.models import TrainingProject, Upload

QUOTA_EXCEEDED = "upload_quota_exceeded"
NOT_YOURS = "upload_not_yours"
UNKNOWN_UPLOAD = "upload_unknown"
REPLACED_UPLOAD = "upload_replaced"


def used_bytes(user: Any) -> int:
    return Upload.objects.filter(owner=user).aggregate(total=Sum("size_bytes"))["total"] or 0


def _quota_problem(user: Any, name: str, size: int, used: int, quota: int) -> Problem:
    return Problem(
        QUOTA_EXCEEDED,
        f"Upload {name} ({human_bytes(size)}) would take {user.get_username()}'s uploads to "
        f"{human_bytes(used + size)}, over the quota of {human_bytes(quota)} per user "
        f"({human_bytes(used)} already kept).",
        "Delete projects you no longer need (uploads no project uses are removed after "
        f"{settings.MTM_UPLOAD_GRACE_HOURS} hours), place the file inside an allowed dataset root on the server, "
        "or ask staff to raise the quota under Settings.",
    )


@dataclass(frozen=True)
class ReceivedUpload:
    """Where an upload is kept, and whether it is the owner's earlier copy of the same bytes (`reused`)."""

    path: Path
    reused: bool = False

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)


def _earlier_copy(owner: Any, digest: str, size: int) -> Upload | None:
    """The owner's own earlier upload of the same bytes whose file is still there, the one stored, unchanged in size."""
    for upload in Upload.objects.filter(owner=owner, sha256=digest, size_bytes=size).order_by("created_at", "id"):
        try:
            # Still the file stored (no link on its path, the same inode), a regular file of the same size.
            intact = claim_form(upload.path, upload.identity) and os.path.isfile(upload.path)
            if intact and os.path.getsize(upload.path) == size:
                return upload
        except OSError:
            continue
    return None


def receive_upload(actor: Actor, fileobj: IO[bytes] | Any, original_name: str) -> ReceivedUpload:
    """Store an upload for the actor's user and record it (owner and audit); DatasetError for a bad file or one
    over the user's quota (nothing is kept then). The same bytes the same user uploaded before answer that first
    copy (`reused`), count once against the quota, and are kept from the periodic cleanup's grace period anew."""
    owner = actor.user
    quota = PortalSettings.load().upload_quota_bytes
    announced = getattr(fileobj, "size", None)
    if quota and isinstance(announced, int):
        used = used_bytes(owner)
        if used + announced > quota:
            raise DatasetError([_quota_problem(owner, str(original_name), announced, used, quota)])
    path = store_upload(fileobj, original_name)
    size = path.stat().st_size
    earlier = None
    try:
        digest = file_sha256(path)
        with transaction.atomic():
            # Lock the user's row so two uploads at once cannot both fit under the quota (or both be first).
            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
            earlier = _earlier_copy(owner, digest, size) if owner is not None and owner.pk else None
            if earlier is not None:
                Upload.objects.filter(pk=earlier.pk).update(created_at=timezone.now())
                audit.record_change(actor, "upload.reuse", earlier, {"sent_as": [None, path.name]})
            else:
                used = used_bytes(owner)
                if quota and used + size > quota:
                    raise DatasetError([_quota_problem(owner, path.name, size, used, quota)])
                real = os.path.realpath(path)
                upload = Upload.objects.create(
                    owner=owner, path=real, size_bytes=size, sha256=digest, identity=identity_of(real)
                )
                audit.record_change(
                    actor,
                    "upload.create",
                    upload,
                    {"path": [None, upload.path], "size_bytes": [None, size], "sha256": [None, digest]},
                )
    except BaseException:
        remove_path(path.parent, ignore_errors=True)
        raise
    if earlier is not None:
        remove_path(path.parent, ignore_errors=True)
        return ReceivedUpload(Path(earlier.path), reused=True)
    return ReceivedUpload(path)


def discard_refused(received: ReceivedUpload, *, actor: Actor) -> bool:
    """Undo `receive_upload` for a file that was refused: remove it when this request stored it; an earlier copy
    handed out again stays (the owner had it before). Returns whether it was removed."""
    if received.reused:
        return False
    return discard_upload(received.path, actor=actor)


def discard_upload(path: str | os.PathLike, *, actor: Actor) -> bool:
    """Remove an upload's folder and record (each upload has a folder of its own under the uploads folder), unless
    a project's dataset or eval file is that file: then nothing is removed. Returns whether it was removed. The
    folder removed is the one the upload was stored in, as stored: a file or folder swapped for a link since is
    removed as the link (remove_path never follows one), never what it leads to."""
    given = os.path.normpath(path)
    record = Upload.objects.filter(path=given).first()
    if record is None:  # given through another spelling (MEDIA_ROOT through a link): the record is stored resolved
        record = Upload.objects.filter(path=resolved(given) or given).first()
    stored = record.path if record is not None else given
    referenced = _referenced()
    if stored in referenced or resolved(stored) in referenced:
        return False
    folder = os.path.dirname(stored)
    # Only an upload's own folder, right inside the uploads folder (a link in its place is removed as the link).
    if resolved(os.path.dirname(folder)) == os.path.realpath(uploads_root()):
        remove_path(folder, ignore_errors=True)
    for upload in Upload.objects.filter(path=stored):
        audit.record_change(actor, "upload.delete", upload, {"path": [upload.path, None]})
        upload.delete()
    return True


def upload_problems(
    located: DatasetPathCheck, user: Any, project: TrainingProject | None, field: str = "dataset_path"
) -> list[Problem]:
    """Why `user` may not use the upload at `located` as `project`'s `field` (its dataset or its eval file): it is
    another user's, or no recorded upload; a file elsewhere that is a hard link of another user's upload is judged
    as that upload. Staff may use any; a project keeps the file it already has there (staff may have set it). What
    the project has is the path saved (already resolved then), compared as saved: a saved file since swapped for a
    link to an upload is judged as that upload."""
    if located.path is None or getattr(user, "is_staff", False):
        return []
    kept = getattr(project, field, "") if project is not None else ""
    if kept and os.path.normpath(kept) == located.path:
        return []
    if not located.uploaded:
        return _linked_upload_problems(located.path, user)
    upload = Upload.objects.filter(path=located.path).select_related("owner").first()
    if upload is not None and claim_form(upload.path, upload.identity) is None:
        return [
            Problem(
                REPLACED_UPLOAD,
                f"Dataset {located.path} is not the file {upload.owner.get_username()} uploaded: it was replaced "
                "since it was stored, so it is no one's upload now.",
                "Upload the file again and use the path that answers.",
            )
        ]
    if upload is not None and user is not None and upload.owner_id == user.pk:
        return []
    if upload is None:
        return [
            Problem(
                UNKNOWN_UPLOAD,
                f"Dataset {located.path} is in the uploads folder but is not an upload of yours.",
                "Upload the file yourself (the Upload button on the form, or POST /api/v1/datasets) and use the "
                "path that answers.",
            )
        ]
    return [
        Problem(
            NOT_YOURS,
            f"Dataset {located.path} was uploaded by {upload.owner.get_username()}; only they and staff may "
            "train on it.",
            "Upload your own copy of the file, or ask its owner to share it through an allowed dataset root.",
        )
    ]


def linked_upload(path: str) -> Upload | None:
    """The recorded upload whose file `path` is another name of (a hard link made with a shell, to an upload stored
    while uploads were readable by everyone on the server, or by the portal's own user), or None. Only a file with more than one name can be one; the rows looked at are
    those whose recorded identity has the file's inode (or none recorded), each compared with the file itself."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2:
        return None
    candidates = Upload.objects.filter(Q(identity__contains=f":{info.st_ino}") | Q(identity="")).select_related("owner")
    for upload in candidates:
        try:
            if os.path.samestat(os.lstat(upload.path), info):
                return upload
        except OSError:
            continue
    return None


def _linked_upload_problems(path: str, user: Any) -> list[Problem]:
    """A file outside the uploads folder that is a hard link of an upload is that upload: its owner's alone."""
    upload = linked_upload(path)
    if upload is None or (user is not None and upload.owner_id == user.pk):
        return []
    return [
        Problem(
            NOT_YOURS,
            f"Dataset {path} is another name (a hard link) of {upload.path}, which {upload.owner.get_username()} "
            "uploaded; only they and staff may train on it.",
            "Upload your own copy of the file, or ask its owner to share it through an allowed dataset root.",
        )
    ]


def _referenced() -> set[str]:
    """Every file a project uses: its dataset and its eval file, as saved (resolved then). A saved path swapped
    since for a link keeps nothing it leads to: a member's link must not keep another member's upload (and its
    share of their quota) forever."""
    rows = TrainingProject.objects.values_list("dataset_path", "eval_dataset_path")
    return {form for row in rows for path in row if path and (form := claim_form(path))}


def cleanup_uploads(now: float | None = None) -> list[str]:
    """Remove uploads older than the grace period that no project references: recorded ones and folders left
    without a record (an upload cut short, or stored before uploads were recorded). Returns the removed paths."""
    now = time.time() if now is None else now
    grace = timedelta(hours=settings.MTM_UPLOAD_GRACE_HOURS)
    cutoff = datetime.fromtimestamp(now, tz=UTC) - grace
    referenced = _referenced()
    removed = []
    for upload in Upload.objects.filter(created_at__lt=cutoff):
        if upload.path not in referenced:
            discard_upload(upload.path, actor=Actor.periodic())
            removed.append(upload.path)
    root = uploads_root()
    recorded = {os.path.dirname(p) for p in Upload.objects.values_list("path", flat=True)}
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_symlink() or not folder.is_dir() or os.path.realpath(folder) in recorded:
                continue
            if folder.lstat().st_mtime > now - grace.total_seconds():
                continue
            if any(str(child) in referenced or os.path.realpath(child) in referenced for child in folder.iterdir()):
                continue
            remove_path(folder, ignore_errors=True)
            removed.append(str(folder))
    return removed


# --- A refused upload, carried by the form until the next save ------------------------------------------------------

REFUSAL_SALT = "projects.datasets.uploads.refused"
MAX_NAME_CHARS = 255


@dataclass(frozen=True)
class RefusedUpload:
    """A file the member uploaded on the form that was refused (and deleted): its name as uploaded and why."""

    name: str
    problems: list[Problem]


def as_uploaded(problems: list[Problem], stored: str | os.PathLike, name: str) -> list[Problem]:
    """`problems` of a stored upload, naming the file as the member uploaded it instead of its path in the uploads
    folder (a folder the member never sees, and gone once the refused upload is deleted)."""
    paths = sorted({str(stored), os.path.realpath(stored)}, key=len, reverse=True)

    def named(text: str) -> str:
        for path in paths:
            text = text.replace(path, name)
        return text

    return [Problem(p.code, named(p.message), named(p.hint)) for p in problems]


def refusal_token(user: Any, refused: RefusedUpload) -> str:
    """A signed note of `refused` for the form to send back on save, so the save says why there is no dataset."""
    problems = [problem.model_dump() for problem in refused.problems]
    return signing.dumps(
        {"user": user.pk, "name": refused.name[:MAX_NAME_CHARS], "problems": problems}, salt=REFUSAL_SALT
    )


def read_refusal(token: str, user: Any) -> RefusedUpload | None:
    """The refused upload a form's note names, or None when there is none (or it was not signed here for `user`)."""
    if not token:
        return None
    try:
        note = signing.loads(token, salt=REFUSAL_SALT)
        if note["user"] != user.pk:
            return None
        return RefusedUpload(str(note["name"]), [Problem.model_validate(problem) for problem in note["problems"]])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None
