"""Every cached repo and every override with its validity, fast.

huggingface_hub's scan_cache_dir stats and realpaths every file and drops a whole repo into its warnings for one
broken link. Here each repo costs a few directory listings and one small read (config.json), no per-file stat or
realpath, and results are kept per repo until the repo's folders change (their mtimes), so a warm listing is four
stats a repo. A broken repo only ever marks itself invalid.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from models_registry.checks import INDEX_FILES, TOKENIZER_FILES, redownload_hint
from models_registry.names import name_error, name_from_folder
from models_registry.outputs import is_within
from models_registry.problems import Problem
from models_registry.resolution import choose_snapshot, incomplete_blobs, resolve

MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass
class ListedModel:
    model_name: str
    source: str
    path: str | None
    revision: str | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "model_name": self.model_name,
            "source": self.source,
            "path": self.path,
            "revision": self.revision,
            "valid": self.valid,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
        }


_memo: dict[str, dict[str, tuple[tuple, ListedModel]]] = {}
_memo_lock = threading.Lock()


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _signature(repo: str, snapshot: str | None) -> tuple:
    return (
        _mtime(os.path.join(repo, "refs")),
        _mtime(os.path.join(repo, "refs", "main")),
        _mtime(os.path.join(repo, "snapshots")),
        _mtime(os.path.join(repo, "blobs")),
        _mtime(snapshot) if snapshot else 0,
    )


def _read_small(link: str, root: str) -> bytes:
    """Read a snapshot file whose link must stay inside the cache root; the check is lexical (no realpath)."""
    target = link
    if os.path.islink(link):
        target = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
    if not is_within(target, root):
        raise PermissionError(f"{os.path.basename(link)} links outside the cache ({target})")
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(MAX_CONFIG_BYTES + 1)


def quick_check(repo_dir: str, name: str, cache_root: str) -> ListedModel:
    item = ListedModel(model_name=name, source="cache", path=None, revision=None)
    hint = redownload_hint(name)
    try:
        snapshots = os.listdir(os.path.join(repo_dir, "snapshots"))
    except OSError:
        snapshots = []
    partial = incomplete_blobs(Path(repo_dir))
    if partial:
        item.errors.append(
            Problem(
                "download_incomplete",
                f"Download incomplete: {len(partial)} interrupted download(s).",
                f"Run the download again: hf download {name}",
            )
        )
    if not snapshots:
        if not partial:
            item.errors.append(
                Problem(
                    "model_not_found",
                    f"Model '{name}' not found. Please ensure the model is downloaded: "
                    "its cache folder holds no snapshot.",
                    hint,
                )
            )
        return item
    choice = choose_snapshot(name, Path(repo_dir), snapshots, None)
    if choice.warning:
        item.warnings.append(choice.warning)
    if choice.error:
        item.errors.append(choice.error)
        return item
    snapshot = os.path.join(repo_dir, "snapshots", choice.commit)
    item.path, item.revision = snapshot, choice.commit
    try:
        names = set(os.listdir(snapshot))
    except OSError as exc:
        item.errors.append(
            Problem("model_format_invalid", f"Model format invalid: cannot list {snapshot}: {exc.strerror}.", hint)
        )
        return item
    _check_config(item, snapshot, names, cache_root, hint)
    if not names.intersection(TOKENIZER_FILES):
        item.errors.append(
            Problem(
                "tokenizer_missing",
                f"Model format invalid: no tokenizer file (expected one of {', '.join(TOKENIZER_FILES)}).",
                hint,
            )
        )
    for index_name in INDEX_FILES:
        if index_name in names:
            _check_index(item, os.path.join(snapshot, index_name), index_name, names, cache_root, hint)
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        item.warnings.append(
            Problem(
                "no_weights",
                "No weights (*.safetensors or *.bin).",
                "Download the full model, not only its configuration and tokenizer.",
            )
        )
    if "generation_config.json" not in names:
        item.warnings.append(Problem("no_generation_config", "No generation_config.json.", ""))
    return item


def _check_config(item: ListedModel, snapshot: str, names: set[str], root: str, hint: str) -> None:
    if "config.json" not in names:
        item.errors.append(Problem("model_format_invalid", "Model format invalid: missing config.json.", hint))
        return
    try:
        raw = _read_small(os.path.join(snapshot, "config.json"), root)
    except PermissionError as exc:
        item.errors.append(
            Problem(
                "unsafe_symlink", f"Unsafe symlink: {exc}. It was not followed.", "Replace the link with the real file."
            )
        )
        return
    except OSError as exc:
        if os.path.islink(os.path.join(snapshot, "config.json")) and exc.errno == 2:
            item.errors.append(
                Problem("download_incomplete", "Download incomplete: config.json points to a missing blob.", hint)
            )
        else:
            item.errors.append(
                Problem("model_format_invalid", f"Model format invalid: cannot read config.json: {exc.strerror}.", hint)
            )
        return
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_CONFIG_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        item.errors.append(
            Problem("model_format_invalid", "Model format invalid: config.json is not a JSON object.", hint)
        )
    elif not data.get("model_type"):
        item.warnings.append(Problem("config_missing_model_type", "config.json has no model_type.", ""))


def _check_index(item: ListedModel, path: str, index_name: str, names: set[str], root: str, hint: str) -> None:
    try:
        data = json.loads(_read_small(path, root).decode("utf-8"))
        shards = {str(v) for v in data["weight_map"].values()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        item.errors.append(
            Problem("weights_invalid", f"Model format invalid: {index_name} is unreadable or has no weight_map.", hint)
        )
        return
    missing = sorted(s for s in shards if s not in names)
    if missing:
        item.errors.append(
            Problem(
                "shard_missing",
                f"Model format invalid: shard {missing[0]} named in {index_name} is missing"
                + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."),
                hint,
            )
        )


def list_cached(cache_dir: Path) -> list[ListedModel]:
    root = os.path.abspath(cache_dir)
    try:
        entries = [e.name for e in os.scandir(root) if e.name.startswith("models--") and e.is_dir()]
    except OSError:
        return []
    with _memo_lock:
        memo = _memo.setdefault(root, {})
        seen = set()
        listed = []
        for folder in sorted(entries):
            seen.add(folder)
            repo = os.path.join(root, folder)
            cached = memo.get(folder)
            if cached and cached[0] == _signature(repo, cached[1].path):
                listed.append(cached[1])
                continue
            name = name_from_folder(folder) or folder
            if problem := name_error(name):
                item = ListedModel(model_name=name, source="cache", path=None, revision=None, errors=[problem])
            else:
                item = quick_check(repo, name, root)
            memo[folder] = (_signature(repo, item.path), item)
            listed.append(item)
        for gone in set(memo) - seen:
            del memo[gone]
    return listed


def list_models(cache_dir: Path, overrides: Iterable[tuple[str, str, bool]] = ()) -> list[ListedModel]:
    """Cached repos and overrides, sorted by name. An override answers for its name, as in resolution."""
    by_name = {item.model_name: item for item in list_cached(cache_dir)}
    for name, path, trust in overrides:
        res = resolve(name, cache_dir=cache_dir, override_path=path, trust_remote_code=trust)
        by_name[name] = ListedModel(name, "override", res.path or path, None, res.errors, res.warnings)
    return [by_name[k] for k in sorted(by_name, key=str.lower)]
