"""Every cached repo and every override with its validity, fast.

huggingface_hub's scan_cache_dir stats and realpaths every file and drops a whole repo into its warnings for one
broken link. Here each repo costs a few directory listings and one small read (config.json), no per-file stat or
realpath, and results are kept per repo until the repo's folders change (their mtimes), so a warm listing is four
stats a repo. A broken repo only ever marks itself invalid.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from models_registry.cache_layout import split_partial_blobs
from models_registry.checks import INDEX_FILES, TOKENIZER_FILES, redownload_hint
from models_registry.names import name_error, name_from_folder
from models_registry.not_a_model import gguf_files, without_config
from models_registry.regular_files import NotRegularFile, read_regular
from models_registry.remote_code import check_remote_code
from models_registry.resolution import choose_snapshot, leftover_partial_problem, resolve
from models_registry.shard_index import SINGLE_FILE_OF_INDEX
from mtm.shared.paths import is_within
from mtm.shared.problems import Problem

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
    """What changes when a repo changes: a new ref, snapshot or blob (download), or a file added to or removed
    from the chosen snapshot. Four stats, whatever the number of files."""
    return (
        _mtime(repo + "/refs/main"),
        _mtime(repo + "/snapshots"),
        _mtime(repo + "/blobs"),
        _mtime(snapshot) if snapshot else 0,
    )


def _read_small(link: str, root: str) -> bytes:
    """Read a snapshot file whose link must stay inside the cache root; the check is lexical (no realpath)."""
    try:
        target = os.path.normpath(os.path.join(os.path.dirname(link), os.readlink(link)))
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a regular file, not a link
            raise
        target = link
    if not is_within(target, root):
        raise PermissionError(f"{os.path.basename(link)} links outside the cache ({target})")
    return read_regular(target, MAX_CONFIG_BYTES, follow=False)


def quick_check(repo_dir: str, name: str, cache_root: str) -> ListedModel:
    item = ListedModel(model_name=name, source="cache", path=None, revision=None)
    hint = redownload_hint(name)
    try:
        snapshots = os.listdir(repo_dir + "/snapshots")
    except OSError:
        snapshots = []
    try:
        partial = [n for n in os.listdir(repo_dir + "/blobs") if n.endswith(".incomplete")]
    except OSError:
        partial = []
    if not snapshots:
        if partial:
            item.errors.append(_partial_problem(name, len(partial)))
        else:
            item.errors.append(
                Problem(
                    "model_not_found",
                    f"Model '{name}' not found. Please ensure the model is downloaded: "
                    "its cache folder holds no snapshot.",
                    hint,
                )
            )
        return item
    commit = _read_main(repo_dir)
    if commit not in snapshots:  # refs/main missing or dangling: let the resolver's rule decide and explain
        choice = choose_snapshot(name, Path(repo_dir), snapshots, None)
        if choice.warning:
            item.warnings.append(choice.warning)
        if choice.error:
            item.errors.append(choice.error)
            return item
        commit = choice.commit
    snapshot = repo_dir + "/snapshots/" + commit
    item.path, item.revision = snapshot, commit
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
                "No weights (*.safetensors or *.bin): not trainable."
                + (f" Only GGUF: {', '.join(gguf_files(names)[:3])}." if gguf_files(names) else ""),
                "Download the full model, not only its configuration and tokenizer.",
            )
        )
    if "generation_config.json" not in names:
        item.warnings.append(Problem("no_generation_config", "No generation_config.json.", ""))
    if partial:
        complete = not item.errors and any(n.endswith((".safetensors", ".bin")) for n in names)
        ours, leftovers = split_partial_blobs(partial, Path(snapshot), complete)
        if ours:
            item.errors.append(_partial_problem(name, len(ours)))
        if leftovers:
            item.warnings.append(leftover_partial_problem(name, leftovers))
    return item


def _partial_problem(name: str, count: int) -> Problem:
    return Problem(
        "download_incomplete",
        f"Download incomplete: {count} interrupted download(s).",
        f"Run the download again: hf download {name}",
    )


def _checked(repo_dir: str, name: str, cache_root: str) -> ListedModel:
    """quick_check, with anything the scan cannot read (a link into /proc/1/cwd) kept as this repo's problem."""
    try:
        return quick_check(repo_dir, name, cache_root)
    except OSError as exc:
        return ListedModel(
            model_name=name,
            source="cache",
            path=None,
            revision=None,
            errors=[
                Problem(
                    "model_unreadable",
                    f"Model '{name}' cannot be read: {exc.strerror or exc} at {exc.filename or repo_dir}.",
                    f"Remove or repair the cache entry (a link that leaves the cache, or a permission), then: "
                    f"hf download {name}",
                )
            ],
        )


def _read_main(repo_dir: str) -> str | None:
    try:
        return read_regular(repo_dir + "/refs/main", 256).strip().decode("ascii", "replace")
    except OSError:
        return None


def _check_config(item: ListedModel, snapshot: str, names: set[str], root: str, hint: str) -> None:
    if "config.json" not in names:
        adapter = os.path.join(snapshot, "adapter_config.json")
        explained = without_config(names, lambda: _read_small(adapter, root), item.model_name, Path(root))
        item.errors.append(
            explained or Problem("model_format_invalid", "Model format invalid: missing config.json.", hint)
        )
        return
    try:
        raw = _read_small(snapshot + "/config.json", root)
    except PermissionError as exc:
        item.errors.append(
            Problem(
                "unsafe_symlink", f"Unsafe symlink: {exc}. It was not followed.", "Replace the link with the real file."
            )
        )
        return
    except NotRegularFile as exc:
        item.errors.append(
            Problem(
                "model_format_invalid",
                f"Model format invalid: {snapshot}/config.json cannot be read: {exc.strerror}.",
                f"Remove it (rm {os.path.join(snapshot, 'config.json')}), then: hf download {item.model_name}",
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
        return
    elif not data.get("model_type"):
        item.warnings.append(Problem("config_missing_model_type", "config.json has no model_type.", ""))
    errors, warnings = check_remote_code(Path(snapshot), data, None, trusted=False, model_name=item.model_name)
    item.errors.extend(errors)
    item.warnings.extend(warnings)


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
    if missing and SINGLE_FILE_OF_INDEX[index_name] in names:
        item.warnings.append(
            Problem(
                "stale_shard_index",
                f"{index_name} names shards that are not here; transformers loads {SINGLE_FILE_OF_INDEX[index_name]}.",
                f"Delete {index_name} if it is left over from an earlier download.",
            )
        )
    elif missing:
        item.errors.append(
            Problem(
                "shard_missing",
                f"Model format invalid: shard {missing[0]} named in {index_name} is missing"
                + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."),
                hint,
            )
        )


def _load_store(store: Path, root: str) -> dict[str, tuple[tuple, ListedModel]]:
    try:
        raw = json.loads(store.read_text())[root]
        return {
            folder: (
                tuple(sig),
                ListedModel(
                    **{
                        **item,
                        "errors": [Problem(**p) for p in item["errors"]],
                        "warnings": [Problem(**p) for p in item["warnings"]],
                    }
                ),
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
    data[root] = {folder: [list(sig), item.to_dict()] for folder, (sig, item) in memo.items()}
    for entry in data[root].values():
        entry[1].pop("valid")
    tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, store)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only var/ only costs speed


def list_cached(cache_dir: Path, store: Path | None = None) -> list[ListedModel]:
    """Every models--* repo in the cache with a quick validity check.

    Results are kept per repo, in this process and, when `store` is given, in a JSON file that other processes
    (gunicorn workers, a restarted portal) start from. An entry is reused only while its signature still matches.
    """
    root = os.path.abspath(cache_dir)
    try:
        entries = [e.name for e in os.scandir(root) if e.name.startswith("models--") and e.is_dir()]
    except OSError:
        return []
    with _memo_lock:
        if root not in _memo and store is not None:
            _memo[root] = _load_store(store, root)
        memo = _memo.setdefault(root, {})
        changed = False
        listed = []
        for folder in sorted(entries):
            repo = os.path.join(root, folder)
            cached = memo.get(folder)
            if cached and cached[0] == _signature(repo, cached[1].path):
                listed.append(cached[1])
                continue
            name = name_from_folder(folder) or folder
            if problem := name_error(name):
                item = ListedModel(model_name=name, source="cache", path=None, revision=None, errors=[problem])
            else:
                item = _checked(repo, name, root)
            memo[folder] = (_signature(repo, item.path), item)
            listed.append(item)
            changed = True
        for gone in set(memo).difference(entries):
            del memo[gone]
            changed = True
        if changed and store is not None:
            _save_store(store, root, memo)
    return listed


def forget(cache_dir: Path | None = None) -> None:
    """Drop this process's memo (all of it, or one cache's): the next listing starts cold."""
    with _memo_lock:
        if cache_dir is None:
            _memo.clear()
        else:
            _memo.pop(os.path.abspath(cache_dir), None)


def list_models(
    cache_dir: Path,
    overrides: Iterable[tuple[str, str, bool]] = (),
    store: Path | None = None,
    published: Iterable[tuple[str, str]] = (),
) -> list[ListedModel]:
    """Cached repos, published models and overrides, sorted by name. As in resolution, an override answers for its
    name, and a published model only for a name the cache does not hold."""
    by_name = {item.model_name: item for item in list_cached(cache_dir, store)}
    for name, path in published:
        if name not in by_name:
            res = resolve(name, cache_dir=cache_dir, published_path=path)
            by_name[name] = ListedModel(name, "portal", res.path or path, None, res.errors, res.warnings)
    for name, path, trust in overrides:
        res = resolve(name, cache_dir=cache_dir, override_path=path, trust_remote_code=trust)
        by_name[name] = ListedModel(name, "override", res.path or path, None, res.errors, res.warnings)
    return [by_name[k] for k in sorted(by_name, key=str.lower)]
