"""Every cached repo and every override with its validity, fast.

Each repo's verdict is kept with its signature, in this process and in a JSON file other processes start from, until
the repo's folders change (their mtimes): a warm listing is three or four stats a repo. A repo is scanned by
hub_layout_scan where it is laid out as huggingface_hub lays it out (the same answer in one function), by repo_scan
otherwise.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

from models_registry.checks import repo_link_problem
from models_registry.folder_walk import counting_entries
from models_registry.hub_layout_scan import scan_hub_layout
from models_registry.listed import ListedModel
from models_registry.name_bytes import encodes
from models_registry.names import name_error, name_from_folder
from models_registry.owner_budget import OwnerBudgets
from models_registry.repo_scan import checked_repo, current_signature, open_root, signature
from models_registry.resolution import Resolution, resolve
from models_registry.shown_names import shown_model
from mtm.shared.problems import Problem

__all__ = ["ListedModel", "forget", "list_cached", "list_models", "listing_store"]

# Names of the Hub's form that names.name_error certainly accepts: org/name, each part runs of letters, digits and
# '_' joined by single '-' or '.' (so no '--', '..', leading or trailing '-' or '.'); with at most 96 characters and
# no '.git' at the end (tests/test_repo_scan.py holds name_error to it). Any other name is name_error's to judge.
_PLAIN_NAME = re.compile(r"\w+(?:[-.]\w+)*/\w+(?:[-.]\w+)*", re.ASCII)
# The repo folder of such a name: its two parts hold no '--', so it holds one '--' after "models--", which
# names.name_from_folder makes the '/'.
_PLAIN_FOLDER = re.compile(r"models--\w+(?:[-.]\w+)*--\w+(?:[-.]\w+)*", re.ASCII)
_FOLDER_PREFIX = len("models--")

_memo: dict[str, dict[str, tuple[tuple, ListedModel]]] = {}
_memo_lock = threading.Lock()


def _load_store(store: Path, root: str) -> dict[str, tuple[tuple, ListedModel]]:
    try:
        raw = json.loads(store.read_text())[root]
        return {
            folder: (
                tuple(sig),
                ListedModel.model_validate(item),
            )
            for folder, (sig, item) in raw.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save_store(store: Path, root: str, memo: dict[str, tuple[tuple, ListedModel]]) -> None:
    try:
        data = json.loads(store.read_text()) if store.exists() else {}
    except (OSError, ValueError):
        data = {}
    # `valid` follows from the errors; transformers' verdict is read from its cache on each listing.
    left_out = {"valid", "deep"}
    data[root] = {
        folder: [list(sig), item.model_dump(mode="json", exclude=left_out)] for folder, (sig, item) in memo.items()
    }
    tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, store)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only var/ only costs speed


def listing_store() -> Path:
    """The JSON file the portal's processes keep their listing verdicts in (list_cached's `store`)."""
    return settings.VAR_DIR / "model-listing.json"


def _name_problem(name: str) -> Problem | None:
    """names.name_error, answered at once for the common form (see _PLAIN_NAME)."""
    if len(name) <= 96 and not name.endswith(".git") and _PLAIN_NAME.fullmatch(name):
        return None
    return name_error(name)


def _plain_folder_name(folder: str) -> str | None:
    """The model name of a repo folder `folder` whose name is of _PLAIN_NAME's form and that _name_problem accepts
    (names.name_from_folder's name, at no more cost than one match), or None: that name is _name_problem's to judge."""
    if _PLAIN_FOLDER.fullmatch(folder) is None or len(folder) - _FOLDER_PREFIX - 1 > 96 or folder.endswith(".git"):
        return None
    return folder[_FOLDER_PREFIX:].replace("--", "/")


def _scanned(folder: str, repo: str, root: str, root_fd: int | None) -> tuple[tuple, ListedModel]:
    """(signature, verdict) of the repo folder `folder`, scanned now by repo_scan."""
    name = name_from_folder(folder) or folder
    if problem := _name_problem(name):
        item = ListedModel(model_name=name, source="cache", path=None, revision=None, errors=[problem])
        return signature(repo, None), shown_model(item)
    found, item = checked_repo(repo, name, root, root_fd)
    return found, shown_model(item)  # the store, like the page, holds only names it can show


def _still_holds(kept: tuple[tuple, ListedModel], repo: str) -> bool:
    return kept[0] == current_signature(repo, kept[0], kept[1])


def list_cached(cache_dir: Path, store: Path | None = None) -> list[ListedModel]:
    """Every models--* repo in the cache with a quick validity check.

    Results are kept per repo, in this process and, when `store` is given, in a JSON file that other processes
    (gunicorn workers, a restarted portal) start from. An entry is reused only while its signature still matches.
    The lock is held only to read and update the kept results, never while a repo is checked: a slow repo delays
    only the listing that scans it (two listings at once may then both scan it, and either result is kept).
    A repo folder that is a link is refused unread. Each owner of repo folders (the uid of the folder itself, not
    followed) has a budget in each call (owner_budget): MTM_MODEL_LISTING_MAX_ENTRIES folder entries, every repo
    folder costing a fixed few plus what its scan reads (a kept verdict that still holds, or a link, only the fixed
    few), and at most MAX_REPOS_PER_OWNER repo folders. Past it, that owner's remaining repo folders are one "not
    checked" row, and nothing of them is kept; a kept verdict that still holds is shown while the owner has room for
    its row, so a later listing goes on where this one stopped. Other owners' repos are listed on their own budgets.
    """
    root = os.path.abspath(cache_dir)
    root_fd = open_root(root)
    try:
        return _list_cached(root, root_fd, store)
    finally:
        if root_fd is not None:
            os.close(root_fd)


def _list_cached(root: str, root_fd: int | None, store: Path | None) -> list[ListedModel]:
    """list_cached of the cache folder `root` (`root_fd`: open_root's descriptor of it, or None)."""
    try:
        # Listed through the descriptor where there is one: each entry's owner is then an lstat relative to it.
        entries = [
            (e.name, _is_link(e), e) for e in os.scandir(root if root_fd is None else root_fd) if _is_repo_folder(e)
        ]
    except OSError:
        return []
    prefix = root if root.endswith("/") else root + "/"
    with _memo_lock:
        if root not in _memo and store is not None:
            _memo[root] = _load_store(store, root)
        kept = dict(_memo.setdefault(root, {}))
    fresh: dict[str, tuple[tuple, ListedModel]] = {}
    listed = []
    budgets = OwnerBudgets(settings.MTM_MODEL_LISTING_MAX_ENTRIES)
    # hub_layout_scan's verdicts are showable as they are only where the paths they hold encode as UTF-8
    hub_layout = root_fd is not None and encodes(prefix)
    with counting_entries() as spent:
        for folder, is_link, entry in sorted(entries):
            repo = prefix + folder
            holds = not is_link and (k := kept.get(folder)) is not None and _still_holds(k, repo)
            if not budgets.allows(entry, scan=not (is_link or holds)):
                continue
            if is_link or holds:
                listed.append(_linked_repo(folder, repo) if is_link else kept[folder][1])
                budgets.charge(entry)
                continue
            before = spent.entries
            found = None
            if hub_layout and (name := _plain_folder_name(folder)):
                found = scan_hub_layout(repo, folder, root, root_fd, name, spent)
            fresh[folder] = found = found or _scanned(folder, repo, root, root_fd)
            listed.append(found[1])
            budgets.charge(entry, spent.entries - before)
    listed.extend(budgets.summaries())
    passed = {folder for folders in budgets.passed.values() for folder in folders}
    gone = set(kept).difference(folder for folder, is_link, _ in entries if not is_link and folder not in passed)
    if fresh or gone:
        with _memo_lock:
            memo = _memo.setdefault(root, {})
            memo.update(fresh)
            for folder in gone:
                memo.pop(folder, None)
            if store is not None:
                _save_store(store, root, memo)
    return listed


def _linked_repo(folder: str, repo: str) -> ListedModel:
    """A repo folder that is a link (huggingface_hub never makes one): refused, nothing read through it."""
    name = name_from_folder(folder) or folder
    return ListedModel(
        model_name=name, source="cache", path=None, revision=None, errors=[repo_link_problem(name, repo)]
    )


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _is_repo_folder(entry: os.DirEntry) -> bool:
    """A models--* folder, or a models--* link (listed as refused, never followed)."""
    if not entry.name.startswith("models--"):
        return False
    try:
        if entry.is_symlink():  # refused as a link whatever it leads to, never followed
            return True
        return entry.is_dir()
    except OSError:
        return True


def forget(cache_dir: Path | None = None) -> None:
    """Drop this process's memo (all of it, or one cache's): the next listing starts cold."""
    with _memo_lock:
        if cache_dir is None:
            _memo.clear()
        else:
            _memo.pop(os.path.abspath(cache_dir), None)


def _resolved_row(name: str, source: str, path: str, res: Resolution, **extra) -> ListedModel:
    """The list's row of a published model or an override, as the resolver judged it."""
    return ListedModel(
        model_name=name,
        source=source,
        path=res.path or path,
        revision=None,
        errors=res.errors,
        warnings=res.warnings,
        **extra,
    )


def list_models(
    cache_dir: Path,
    overrides: Iterable[tuple[str, str, bool]] = (),
    store: Path | None = None,
    published: Iterable[tuple[str, str]] = (),
) -> list[ListedModel]:
    """Cached repos, published models and overrides, sorted by name. As in resolution, an override answers for its
    name, then a published model (a cache repo of its name is only a warning on its row), then the cache."""
    by_name = {item.model_name: item for item in list_cached(cache_dir, store)}
    for name, path in published:
        by_name[name] = _resolved_row(name, "portal", path, resolve(name, cache_dir=cache_dir, published_path=path))
    for name, path, trust in overrides:
        res = resolve(name, cache_dir=cache_dir, override_path=path, trust_remote_code=trust)
        by_name[name] = _resolved_row(name, "override", path, res, trust_remote_code=bool(trust))
    return [by_name[k] for k in sorted(by_name, key=str.lower)]
