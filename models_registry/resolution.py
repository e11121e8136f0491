"""Where models live and which folder answers for a name: override first, then a model published from a run (source
"portal"), then the HF cache, then an explicit failure."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from models_registry.cache_layout import hub_absent_files, near_names, split_partial_blobs
from models_registry.checks import (
    CacheContext,
    FileEntry,
    check_model_folder,
    folder_too_large,
    redownload_hint,
    repo_link_problem,
    snapshot_link_problem,
)
from models_registry.folder_walk import FolderTooLarge, bounded_names, walk_model_folder
from models_registry.name_bytes import encodes, not_utf8_problem
from models_registry.names import is_commit_hash, name_error, repo_folder_name, revision_error
from models_registry.ref_files import read_ref
from models_registry.shown_resolution import shown_resolution
from mtm.shared.nofollow import LINK_ERRORS, open_dir_nofollow
from mtm.shared.problems import Problem


def hf_cache_dir(model_cache_path: str = "", environ: os._Environ | dict | None = None) -> tuple[Path, str]:
    """The hub cache folder and what chose it. Read per call: huggingface_hub reads its variables once at import."""
    env = os.environ if environ is None else environ
    if model_cache_path.strip():
        return Path(model_cache_path.strip()).expanduser(), "Model Cache Path setting"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(env[var]).expanduser(), var
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub", "HF_HOME"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub", "XDG_CACHE_HOME"
    return Path("~/.cache/huggingface/hub").expanduser(), "default"


class Resolution(BaseModel):
    """Which folder answers for a model name, and what is wrong with it. Its JSON (model_dump) is the API's
    validate-model answer; `files` there are the file names."""

    # Every field is in every answer: the API schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    model_name: str
    source: str | None = None
    path: str | None = None
    revision: str | None = None
    files: list[FileEntry] = Field(default_factory=list)
    errors: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    searched: list[str] = Field(default_factory=list)
    trust_remote_code: bool = Field(False, exclude=True)
    tokenizer_source: str | None = None
    provenance: str | None = Field(
        None,
        description='For source "portal": a fine-tune published in this portal, by whom, from which run and base model.',
    )
    unread: bool = Field(False, exclude=True)  # its folder was refused before any file was read (past its limits)

    @computed_field
    @property
    def valid(self) -> bool:
        return not self.errors and self.path is not None

    @field_serializer("files")
    def _file_names(self, files: list[FileEntry]) -> list[str]:
        return [f.name for f in files]


def not_found(name: str, cache_dir: Path, detail: str, revision: str | None = None) -> Problem:
    repo = cache_dir / repo_folder_name(name)
    download = f"hf download {name}" + (f" --revision {revision}" if revision else "")
    legacy = f"huggingface-cli download {name}" + (f" --revision {revision}" if revision else "")
    return Problem(
        "model_not_found",
        f"Model '{name}' not found. Please ensure the model is downloaded: {detail}",
        f"1. Download it: {download} (older clients: {legacy}). "
        f"2. Verify it is in the cache: ls {repo}/ "
        "3. If the model is elsewhere, set Model Cache Path under Settings → Directory Settings, "
        "or ask staff to add a Model Override that maps this name to its folder.",
    )


@dataclass
class SnapshotChoice:
    commit: str | None
    error: Problem | None = None
    warning: Problem | None = None


def choose_snapshot(name: str, repo_dir: Path, snapshots: list[str], revision: str | None) -> SnapshotChoice:
    """The snapshot a revision names; for none, refs/main, or the only snapshot there is (with a warning)."""
    available = set(snapshots)
    if revision:
        ref = None if is_commit_hash(revision) else read_ref(str(repo_dir), revision)
        commit = ref.commit if ref else revision
        if commit and commit in available:
            return SnapshotChoice(commit)
        if ref is None:
            found = "no snapshot of that commit"
        else:
            found = f"refs/{revision} names {commit}" if commit else ref.trouble
        return SnapshotChoice(
            None,
            error=Problem(
                "revision_not_found",
                f"Revision '{revision}' of '{name}' is not in the cache ({found}; snapshots: "
                f"{', '.join(sorted(available)) or 'none'}).",
                f"Download that revision: hf download {name} --revision {revision}",
            ),
        )
    ref = read_ref(str(repo_dir), "main")
    commit = ref.commit
    if commit and commit in available:
        return SnapshotChoice(commit)
    problem = ref.trouble or f"refs/main names {commit}, which has no snapshot"
    if len(available) == 1:
        only = next(iter(available))
        return SnapshotChoice(
            only,
            warning=Problem(
                "ref_main_unusable",
                f"{problem}; using the only snapshot, {only}.",
                f"Re-download to repair the cache entry: hf download {name}",
            ),
        )
    refs_found = _list_refs(repo_dir)
    return SnapshotChoice(
        None,
        error=Problem(
            "revision_not_found",
            f"Cannot choose a snapshot of '{name}': {problem}, and there are {len(available)} snapshots "
            f"({', '.join(sorted(available)) or 'none'}); refs found: {', '.join(refs_found) or 'none'}.",
            f"Name the revision you want, or re-download: hf download {name}",
        ),
    )


def _list_refs(repo_dir: Path) -> list[str]:
    """The refs of a repo by name; for a refs/ folder larger than a model's, one phrase saying so."""
    refs = repo_dir / "refs"
    if not refs.is_dir():
        return []
    try:
        listed = walk_model_folder(refs)
    except FolderTooLarge as exc:
        return [f"none listed (refs/ {exc.reason})"]
    return sorted(Path(f.path, name).relative_to(refs).as_posix() for f in listed for name in f.others)


def incomplete_blobs(repo_dir: Path) -> list[str]:
    """The interrupted downloads in the repo's blobs/; FolderTooLarge past a model folder's limits."""
    return sorted(n for n in _safe_listdir(repo_dir / "blobs") if n.endswith(".incomplete"))


def _snapshot_folders(repo_dir: Path, revision: str | None) -> list[str]:
    """The entries of the repo's snapshots/. Past a model folder's limits, the one snapshot the revision (or
    refs/main) names when it is there, as the model list reaches it without listing snapshots/; else FolderTooLarge."""
    try:
        return _safe_listdir(repo_dir / "snapshots")
    except FolderTooLarge:
        wanted = (
            revision if revision and is_commit_hash(revision) else read_ref(str(repo_dir), revision or "main").commit
        )
        if wanted and "/" not in wanted and wanted not in (".", "..") and (repo_dir / "snapshots" / wanted).is_dir():
            return [wanted]
        raise


def _safe_listdir(path: Path) -> list[str]:
    """The names in `path` ([] when it is missing or unreadable), listed as the model list lists them: FolderTooLarge
    past a model folder's limits."""
    try:
        return bounded_names(str(path))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def resolve(
    name: str,
    revision: str | None = None,
    *,
    cache_dir: Path,
    override_path: str | None = None,
    trust_remote_code: bool = False,
    published_path: str | None = None,
    published_problem: Problem | None = None,
) -> Resolution:
    """Resolve a model name to a checked folder. Plain values in, a Resolution out; nothing raised for bad input.
    `published_path` (a run's model published under this name) answers ahead of the cache, since whoever can write
    in the cache could otherwise take the name over; a cache repo of the name is then a warning. `published_problem`
    (its run's folder is no longer the one the worker made) makes it invalid unread. Every name and message in the
    answer can be shown (shown_names.shown_resolution)."""
    return shown_resolution(
        _resolve(
            name,
            revision,
            cache_dir=cache_dir,
            override_path=override_path,
            trust_remote_code=trust_remote_code,
            published_path=published_path,
            published_problem=published_problem,
        )
    )


def _resolve(
    name: str,
    revision: str | None,
    *,
    cache_dir: Path,
    override_path: str | None,
    trust_remote_code: bool,
    published_path: str | None,
    published_problem: Problem | None,
) -> Resolution:
    result = Resolution(model_name=name if isinstance(name, str) else repr(name))
    if problem := name_error(name):
        result.errors.append(problem)
        return result
    revision = (revision or "").strip() or None
    if revision and (problem := revision_error(revision)):
        result.errors.append(problem)
        return result
    try:
        if override_path is not None:
            return _resolve_override(result, override_path, revision, trust_remote_code, Path(cache_dir))
        if published_path is not None:
            _resolve_published(result, published_path, revision, Path(cache_dir), published_problem)
            if copy := cache_copy_ignored(name, Path(cache_dir), published_path):
                result.warnings.append(copy)
            return result
        return _resolve_cache(result, Path(cache_dir), revision)
    except OSError as exc:  # a folder the scan cannot read is this model's problem, never the caller's error
        result.path, result.files = None, []
        result.errors.append(_unreadable(name, exc, override_path is not None))
        return result


def _unreadable(name: str, exc: OSError, override: bool) -> Problem:
    where = str(exc.filename or "its folder")
    try:
        if os.path.islink(where):
            where += f" (a link to {os.readlink(where)})"
    except OSError:
        pass
    fix = (
        "Staff: point the override at a readable model folder, or disable it."
        if override
        else f"Remove or repair the cache entry (a link that leaves the cache, or a permission), then: hf download {name}"
    )
    return Problem(
        "model_unreadable",
        f"Model '{name}' cannot be read: {exc.strerror or exc} at {where}.",
        fix,
    )


def _resolve_override(
    result: Resolution, override_path: str, revision: str | None, trust: bool, cache_dir: Path
) -> Resolution:
    name = result.model_name
    folder = Path(override_path)
    result.searched.append(f"override: {folder}")
    result.source = "override"
    result.trust_remote_code = trust
    if not folder.is_absolute():
        result.errors.append(
            Problem(
                "override_invalid",
                f"The override for '{name}' has a relative path ({override_path}).",
                "Staff: set the override's path to the model folder's absolute path.",
            )
        )
        return result
    if not folder.is_dir():
        result.errors.append(
            Problem(
                "model_not_found",
                f"Model '{name}' not found. Please ensure the model is downloaded: its override points to "
                f"{folder}, which is not a folder.",
                f"Copy the model to {folder}, or ask staff to correct or disable the override.",
            )
        )
        return result
    if not os.path.lexists(folder / "config.json"):
        # Checked by name, without listing the folder: an override may point anywhere on the server (a home
        # folder, /proc), and walking such a tree is slow and reads what was never meant to be a model.
        result.errors.append(
            Problem(
                "override_not_a_model",
                f"The override for '{name}' points to {folder}, which has no config.json: it is not a model folder "
                "(its contents were not listed).",
                "Staff: point the override at the folder that holds the model's config.json and tokenizer, or "
                "disable it.",
            )
        )
        return result
    if revision:
        result.warnings.append(
            Problem(
                "revision_ignored", f"Revision '{revision}' is ignored: the override's folder has no revisions.", ""
            )
        )
    report = check_model_folder(
        folder, root=folder, model_name=name, trust_remote_code=trust, context=CacheContext(cache_dir=cache_dir)
    )
    result.path, result.tokenizer_source = str(folder), report.tokenizer_source
    result.files, result.errors, result.warnings = report.files, report.errors, result.warnings + report.warnings
    result.unread = report.unread
    return result


def _resolve_published(
    result: Resolution, path: str, revision: str | None, cache_dir: Path, problem: Problem | None
) -> Resolution:
    """A run's model published in the portal: its folder, checked as an override's is, and reached without following
    any link on its path; links out of it are unsafe."""
    name = result.model_name
    folder = Path(path)
    result.searched.append(f"published: {folder}")
    result.source = "portal"
    if problem is not None:
        result.errors.append(problem)
        return result
    if _linked(folder):
        result.errors.append(
            Problem(
                "run_folder_changed",
                f"Model '{name}' was published from a run whose model folder {folder} is now reached through a link "
                "(a folder on its path was swapped for one): it was not read.",
                "Put the run's own folder back at that path, or unpublish the name and publish a run whose folder "
                "was not changed.",
            )
        )
        return result
    if not folder.is_absolute() or not folder.is_dir():
        result.errors.append(
            Problem(
                "model_not_found",
                f"Model '{name}' not found. Please ensure the model is downloaded: it was published from a run whose "
                f"model folder {folder} is no longer a folder (deleted or moved since).",
                "Publish the name again from a run whose files are on disk, or unpublish it.",
            )
        )
        return result
    if revision:
        result.warnings.append(
            Problem("revision_ignored", f"Revision '{revision}' is ignored: a published model has no revisions.", "")
        )
    report = check_model_folder(folder, root=folder, model_name=name, context=CacheContext(cache_dir=cache_dir))
    result.path, result.tokenizer_source = str(folder), report.tokenizer_source
    result.files, result.errors, result.warnings = report.files, report.errors, result.warnings + report.warnings
    result.unread = report.unread
    return result


def cache_copy_ignored(name: str, cache_dir: Path, published_path: str) -> Problem | None:
    """The warning for a cache repo under a published name: it is not used, and who put it there."""
    repo_dir = cache_dir / repo_folder_name(name)
    try:
        info = os.lstat(repo_dir)
    except OSError:
        return None
    return Problem(
        "cache_copy_ignored",
        f"'{name}' is a fine-tune published in this portal and resolves to its run's folder ({published_path}). "
        f"The Hugging Face cache also holds {repo_dir} (owned by {owner_name(info.st_uid)}), which is not used: a "
        "published name comes before the cache.",
        f"If that copy should not be there, ask staff to remove it (rm -r {repo_dir}). To train on a cache copy "
        "under this name instead, unpublish the portal name first.",
    )


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _linked(folder: Path) -> bool:
    """Whether a link (or a file) stands on the absolute path `folder`, where a folder should."""
    if not folder.is_absolute():
        return False
    try:
        os.close(open_dir_nofollow(str(folder)))
    except FileNotFoundError:
        return False
    except OSError as exc:
        return exc.errno in LINK_ERRORS
    return False


def _resolve_cache(result: Resolution, cache_dir: Path, revision: str | None) -> Resolution:
    name = result.model_name
    repo_dir = cache_dir / repo_folder_name(name)
    result.searched.append(f"cache: {repo_dir}")
    if repo_dir.is_symlink():  # huggingface_hub never makes one: nothing is read through it
        result.source = "cache"
        result.errors.append(repo_link_problem(name, str(repo_dir)))
        result.unread = True
        return result
    if not repo_dir.is_dir():
        where = f"no folder {repo_dir.name} in the Hugging Face cache at {cache_dir}."
        if not cache_dir.is_dir():
            where = f"the Hugging Face cache folder {cache_dir} does not exist."
        where = " ".join([where, *near_names(cache_dir, name)])
        result.errors.append(not_found(name, cache_dir, where, revision))
        return result
    result.source = "cache"
    try:
        snapshots = _snapshot_folders(repo_dir, revision)
        partial = incomplete_blobs(repo_dir)
    except FolderTooLarge as exc:  # refused unread, as the model list refuses it
        result.errors.append(folder_too_large(exc, name))
        result.unread = True
        return result
    if not snapshots:
        if partial:
            result.errors.append(_incomplete_problem(name, partial, revision))
        else:
            result.errors.append(not_found(name, cache_dir, f"{repo_dir} holds no snapshot.", revision))
        return result
    choice = choose_snapshot(name, repo_dir, snapshots, revision)
    if choice.warning:
        result.warnings.append(choice.warning)
    if choice.error:
        result.errors.append(choice.error)
        return result
    if not encodes(choice.commit):
        result.errors.append(not_utf8_problem("snapshot folder", choice.commit, name))
        result.unread = True
        return result
    snapshot = repo_dir / "snapshots" / choice.commit
    result.path, result.revision = str(snapshot), choice.commit
    if unsafe := snapshot_link_problem(str(snapshot), str(cache_dir)):  # a snapshot folder leading out of the cache
        result.errors.append(unsafe)
        result.unread = True
        return result
    context = CacheContext(cache_dir, choice.commit, hub_absent_files(repo_dir, choice.commit))
    report = check_model_folder(snapshot, root=cache_dir, model_name=name, context=context)
    result.files, result.tokenizer_source, result.unread = report.files, report.tokenizer_source, report.unread
    result.errors.extend(_for_revision(p, name, revision) for p in report.errors)
    result.warnings.extend(_for_revision(p, name, revision) for p in report.warnings)
    if partial:
        complete = not result.errors and any(f.name.endswith((".safetensors", ".bin")) for f in result.files)
        ours, leftovers = split_partial_blobs(partial, snapshot, complete)
        if ours:
            result.errors.append(_incomplete_problem(name, ours, revision))
        if leftovers:
            result.warnings.append(leftover_partial_problem(name, leftovers))
    return result


def _for_revision(problem: Problem, name: str, revision: str | None) -> Problem:
    """A check's download hint fetches the revision that was asked for, not main (a PR ref, a tag)."""
    if not revision or "--revision" in problem.hint:
        return problem
    hint = problem.hint.replace(f"download {name}", f"download {name} --revision {revision}")
    return problem.model_copy(update={"hint": hint})


def _shown(partial: list[str]) -> str:
    return ", ".join(partial[:3]) + (f" and {len(partial) - 3} more" if len(partial) > 3 else "")


def _incomplete_problem(name: str, partial: list[str], revision: str | None = None) -> Problem:
    again = f"hf download {name}" + (f" --revision {revision}" if revision else "")
    return Problem(
        "download_incomplete",
        f"Download incomplete: '{name}' has {len(partial)} interrupted download(s) in its blobs folder "
        f"({_shown(partial)}).",
        f"Run the download again to finish it: {again}",
    )


def leftover_partial_problem(name: str, partial: list[str]) -> Problem:
    return Problem(
        "stale_partial_download",
        f"'{name}' has {len(partial)} interrupted download(s) in its blobs folder ({_shown(partial)}) that no file "
        "of the chosen snapshot uses: left over from another file or revision. The model is complete.",
        f"Delete them to free the space, or finish them: hf download {name}",
    )


__all__ = ["Resolution", "choose_snapshot", "hf_cache_dir", "resolve", "redownload_hint"]
