"""Format checks of one model folder: config, tokenizer, weights and shards, read without loading tensors."""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from models_registry.bounded_json import (
    MAX_HEADER_BYTES,
    MAX_PARSED_BYTES,
    MAX_PARSED_TOKENIZER_BYTES,
    checked_on_worker,
    read_json,
)
from models_registry.folder_walk import FolderTooLarge, walk_model_folder
from models_registry.lfs_pointers import take_lfs_pointers
from models_registry.name_bytes import encodes, not_utf8_problem
from models_registry.not_a_model import gguf_files, without_config
from models_registry.pickle_scan import check_bin
from models_registry.regular_files import NotRegularFile, kind_of, open_regular
from models_registry.remote_code import check_remote_code
from models_registry.shard_index import check_index, loaded_safetensors
from models_registry.tokenizer_check import vocabulary_source
from models_registry.weights_consistency import compare_config_with_weights
from mtm.shared.bounded_walk import ENTRIES
from mtm.shared.paths import is_within
from mtm.shared.problems import Problem
from mtm.shared.text import storable

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# The most a worker reads of one JSON file it writes or validates; the web process parses far less (bounded_json).
MAX_JSON_BYTES = 64 * 1024 * 1024
# A real safetensors header names a few thousand tensors in well under 1 MiB; a larger one is transformers' to read.


@dataclass
class FileEntry:
    name: str
    size: int | None
    symlink: bool = False


@dataclass
class FolderReport:
    files: list[FileEntry] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    tokenizer_source: str | None = None  # the files the tokenizer's vocabulary would be built from
    unread: bool = False  # refused before any file was read (a folder past a model's limits)

    @property
    def valid(self) -> bool:
        return not self.errors


def redownload_hint(model_name: str | None) -> str:
    if model_name:
        fetch = (
            f"Re-download the model: hf download {model_name} (older clients: huggingface-cli download {model_name})"
        )
    else:
        fetch = "Copy the model folder again from its source"
    return f"{fetch}. Make sure you have the full model, not just its tokenizer, and check the file permissions."


def _scan(folder: Path, root: Path, report: FolderReport, model_name: str | None) -> dict[str, Path]:
    """Every file under `folder` that is safe to read, by its relative name. Links leaving `root` are refused.
    FolderTooLarge, before any file is looked at, when `folder` holds more than a model's folder can."""
    usable: dict[str, Path] = {}
    real_root = os.path.realpath(root)
    for listed in walk_model_folder(folder):
        # The walk does not descend into symlinked folders; report those that point outside the root.
        for d in listed.folders:
            full = os.path.join(listed.path, d)
            if os.path.islink(full) and not is_within(_real_or_none(full) or "", real_root):
                report.errors.append(_unsafe(os.path.relpath(full, folder), full, real_root))
        for fname in listed.others:
            full = os.path.join(listed.path, fname)
            rel = Path(os.path.relpath(full, folder)).as_posix()
            is_link = os.path.islink(full)
            if not encodes(rel):  # no page, JSON answer or training run can name it: never read
                report.errors.append(not_utf8_problem("file", rel, model_name))
                report.files.append(FileEntry(storable(rel), None, is_link))
                continue
            target = _real_or_none(full)
            if target is None or not is_within(target, real_root):
                report.errors.append(_unsafe(rel, full, real_root))
                report.files.append(FileEntry(rel, None, is_link))
                continue
            try:
                info = os.stat(target)
                size = info.st_size
            except FileNotFoundError:
                report.errors.append(
                    Problem(
                        "download_incomplete",
                        f"Download incomplete: {rel} points to {_link_text(full)}, which does not exist.",
                        redownload_hint(model_name),
                    )
                )
                report.files.append(FileEntry(rel, None, is_link))
                continue
            except OSError as exc:
                report.errors.append(
                    Problem(
                        "model_format_invalid",
                        f"Model format invalid: cannot read {rel}: {exc.strerror}.",
                        redownload_hint(model_name),
                    )
                )
                continue
            if not stat.S_ISREG(info.st_mode):  # a FIFO would make every later read wait forever
                report.errors.append(
                    Problem(
                        "model_format_invalid",
                        f"Model format invalid: {rel} is {kind_of(info.st_mode)}, not a regular file; it was not read.",
                        f"Remove it (rm {full}); {redownload_hint(model_name)}",
                    )
                )
                report.files.append(FileEntry(rel, None, is_link))
                continue
            report.files.append(FileEntry(rel, size, is_link))
            if rel.endswith(".incomplete"):
                report.errors.append(
                    Problem(
                        "download_incomplete",
                        f"Download incomplete: {rel} is a partial download.",
                        redownload_hint(model_name),
                    )
                )
                continue
            usable[rel] = Path(target)
    return usable


def _real_or_none(path: str) -> str | None:
    """Where a path leads, or None when following it fails (a link into /proc/1/cwd raises EACCES)."""
    try:
        return os.path.realpath(path)
    except OSError:
        return None


def _link_text(path: str) -> str:
    try:
        return os.readlink(path) if os.path.islink(path) else path
    except OSError:
        return path


def folder_too_large(exc: FolderTooLarge, model_name: str | None = None) -> Problem:
    """The problem of a folder past a model's limits, as the model page, the list and the verdict give it."""
    entries = exc.kind == ENTRIES
    setting = "MTM_MODEL_FOLDER_MAX_ENTRIES" if entries else "MTM_MODEL_FOLDER_MAX_DEPTH"
    what = "files and folders" if entries else "folders nested that deep"
    branch = os.path.join(exc.top, exc.branch) if exc.branch else ""
    remove = f" (the limit was reached in {branch}: rm -r {shlex.quote(branch)})" if branch else ""
    name = f"'{model_name}'" if model_name else "the model"
    return Problem(
        "model_format_invalid",
        f"Model format invalid: {exc.top} {exc.reason}, the limit set by {setting}. The portal does not read a "
        "folder past this size: none of its files was read, so the model cannot be checked or trained.",
        f"Remove from {exc.top} what does not belong to {name}{remove}. If the model really has that many "
        f"{what}, ask staff to raise {setting}.",
    )


def _unsafe(rel: str, full: str, root: str) -> Problem:
    return Problem(
        "unsafe_symlink",
        f"Unsafe symlink: {rel} points to {_link_text(full)}, outside {root} (or where it cannot be followed). "
        "It was not followed.",
        "Replace the link with the real file, or move the model inside the cache or override folder.",
    )


def repo_link_problem(name: str, repo_dir: str) -> Problem:
    """A repo folder of the cache that is a link: huggingface_hub never makes one, so nothing is read through it."""
    folder = os.path.basename(repo_dir)
    target = _link_text(repo_dir)
    return Problem(
        "repo_folder_is_link",
        f"Model '{name}': {folder} in the Hugging Face cache is a link to {target}, not a folder. The cache's repo "
        "folders are folders huggingface_hub made, so nothing was read through it.",
        f"Remove the link (rm {shlex.quote(repo_dir)}), or download the model into the cache: hf download {name}",
    )


def snapshot_link_problem(snapshot: str, root: str) -> Problem | None:
    """The problem of a snapshot folder that is a link leading outside the cache `root`; None for a real folder, a link
    inside the cache, or one that cannot be followed (reading it then says why)."""
    if not os.path.islink(snapshot):
        return None
    try:
        target = os.path.realpath(snapshot, strict=True)
        real_root = os.path.realpath(root, strict=True)
    except OSError:
        return None
    if is_within(target, real_root):
        return None
    return _unsafe(os.path.relpath(snapshot, os.path.dirname(os.path.dirname(snapshot))), snapshot, real_root)


def _read_json(
    path: Path, rel: str, model_name: str | None, code: str, limit: int = MAX_PARSED_BYTES
) -> tuple[object | None, Problem | None, Problem | None]:
    """(the parsed JSON, the error, the warning that its contents are left to transformers on a worker): at most
    one of the three is set. Nothing larger than `limit` is parsed in the web process (models_registry/bounded_json)."""
    hint = redownload_hint(model_name)
    try:
        read = read_json(path, limit)
    except PermissionError:
        return None, Problem(code, f"Model format invalid: {rel} cannot be read (permission denied).", hint), None
    except (NotRegularFile, IsADirectoryError, FileNotFoundError):
        return None, Problem(code, f"Model format invalid: {rel} is not a regular file.", hint), None
    if read.problem:
        return None, Problem(code, f"Model format invalid: {rel} {read.problem}.", hint), None
    if read.deferred:
        return None, None, checked_on_worker(rel, read.size)
    return read.value, None, None


def _check_config(
    usable: dict[str, Path], folder: Path, report: FolderReport, model_name: str | None, context: CacheContext
) -> dict | None:
    """The config's problems go into the report; the config itself is returned when it is a JSON object."""
    hint = redownload_hint(model_name)
    path = usable.get("config.json")
    if path is None:
        if (folder / "config.json").is_dir():
            report.errors.append(
                Problem(
                    "model_format_invalid",
                    "Model format invalid: config.json is not a regular file.",
                    hint,
                )
            )
        elif not any(e.name == "config.json" for e in report.files):
            report.errors.append(_missing_config(usable, folder, model_name, hint, context))
        return None
    data, problem, notice = _read_json(path, "config.json", model_name, "model_format_invalid")
    if problem:
        report.errors.append(problem)
    elif notice:
        report.warnings.append(notice)
    elif not isinstance(data, dict):
        report.errors.append(
            Problem(
                "model_format_invalid",
                f"Model format invalid: config.json holds a JSON {type(data).__name__}, not an object.",
                hint,
            )
        )
    elif not data.get("model_type"):
        report.warnings.append(
            Problem(
                "config_missing_model_type",
                "config.json has no model_type: transformers may not know which architecture to build.",
                'Add the model_type of the architecture (e.g. "llama") to config.json.',
            )
        )
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class CacheContext:
    """Where a cache snapshot came from, for messages that depend on it (empty for a plain folder)."""

    cache_dir: Path | None = None
    commit: str | None = None
    hub_absent: frozenset[str] = frozenset()


def _missing_config(
    usable: dict[str, Path], folder: Path, model_name: str | None, hint: str, context: CacheContext
) -> Problem:
    """A folder without config.json: an adapter, a GGUF export, a file the Hub never had, or an incomplete copy."""
    explained = without_config(
        usable, lambda: read_json(usable["adapter_config.json"]).value, model_name, context.cache_dir
    )
    if explained:
        return explained
    if "config.json" in context.hub_absent:
        return _not_on_hub("config.json", model_name, context)
    return Problem("model_format_invalid", f"Model format invalid: missing config.json in {folder}.", hint)


def _not_on_hub(what: str, model_name: str | None, context: CacheContext) -> Problem:
    return Problem(
        "not_on_hub",
        f"'{model_name}' has no {what} on the Hub at commit {context.commit}: huggingface_hub recorded its absence "
        f"in .no_exist/{context.commit}/, so re-downloading this revision cannot bring it.",
        "This repo is not a transformers model at this revision (check its model card for the format it uses), "
        "or choose another revision or another repo of the same model.",
    )


def _check_tokenizer(
    usable: dict[str, Path], folder: Path, report: FolderReport, model_name: str | None, context: CacheContext
) -> dict | None:
    """The tokenizer's problems and vocabulary source go into the report; tokenizer_config.json is returned."""
    present = [name for name in TOKENIZER_FILES if name in usable]
    if not present:
        if {"tokenizer.json", "tokenizer_config.json"} <= context.hub_absent:
            report.errors.append(_not_on_hub("tokenizer (tokenizer.json, tokenizer_config.json)", model_name, context))
            return None
        report.errors.append(
            Problem(
                "tokenizer_missing",
                f"Model format invalid: no tokenizer file in {folder} (expected one of {', '.join(TOKENIZER_FILES)}).",
                redownload_hint(model_name),
            )
        )
        return None
    errors_before = len(report.errors)
    tokenizer_config = None
    config_unread = False
    for name in present:
        if name.endswith(".json"):
            limit = MAX_PARSED_TOKENIZER_BYTES if name == "tokenizer.json" else MAX_PARSED_BYTES
            data, problem, notice = _read_json(usable[name], name, model_name, "tokenizer_invalid", limit)
            if problem:
                report.errors.append(problem)
            elif notice:
                report.warnings.append(notice)
                config_unread = config_unread or name == "tokenizer_config.json"
            elif not isinstance(data, dict):
                report.errors.append(
                    Problem(
                        "tokenizer_invalid",
                        f"Model format invalid: {name} is not a JSON object.",
                        redownload_hint(model_name),
                    )
                )
            elif name == "tokenizer_config.json":
                tokenizer_config = data
        elif usable[name].stat().st_size == 0:
            report.errors.append(
                Problem(
                    "tokenizer_invalid",
                    f"Model format invalid: {name} is empty.",
                    redownload_hint(model_name),
                )
            )
    if len(report.errors) > errors_before:
        return tokenizer_config
    if config_unread and "tokenizer.json" not in usable:  # its class decides the vocabulary: transformers' to say
        return None
    source, problem = vocabulary_source(
        usable, tokenizer_config, model_name or str(folder), redownload_hint(model_name)
    )
    report.tokenizer_source = source
    if problem:
        report.errors.append(problem)
    return tokenizer_config


def _header_too_large(fd: int) -> int | None:
    """The size of a safetensors header too large to parse here (one that fits in the file), else None."""
    head = os.pread(fd, 8, 0)
    size = int.from_bytes(head, "little") if len(head) == 8 else 0
    return size if MAX_HEADER_BYTES < size <= os.fstat(fd).st_size - 8 else None


def _check_safetensors(
    rel: str, path: Path, model_name: str | None, shapes: dict[str, list[int]]
) -> tuple[Problem | None, Problem | None]:
    """Check one safetensors file and add its tensors' shapes to `shapes`, all from the header: (the error, the
    warning that its header is left to transformers on a worker)."""
    try:
        # safe_open parses and checks the header (size, JSON, dtypes, offsets covering the file exactly)
        # and maps the file without reading any tensor data; get_slice(...).get_shape() reads the header only.
        # Through the descriptor of the file checked to be a regular one: a FIFO swapped in meanwhile is not opened.
        fd = open_regular(path)
        try:
            if (header := _header_too_large(fd)) is not None:
                return None, checked_on_worker(f"the header of {rel}", header)
            with safe_open(f"/proc/self/fd/{fd}", framework="numpy") as fh:
                for key in fh.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                    shapes[key] = list(fh.get_slice(key).get_shape())
                return None, None
        finally:
            os.close(fd)
    except (SafetensorError, OSError, ValueError) as exc:
        problem = Problem(
            "weights_invalid",
            f"Model format invalid: weights file {rel} is corrupt: {exc}.",
            redownload_hint(model_name),
        )
        return problem, None


def _loaded_bins(usable: dict[str, Path], model_name: str | None) -> set[str]:
    """The .bin files transformers loads as weights: pytorch_model*.bin, adapter_model.bin and the shards its index
    names. Others, like training_args.bin, pickle other things on purpose and training never unpickles them."""
    names = {n for n in usable if n.endswith(".bin") and (n.startswith("pytorch_model") or n == "adapter_model.bin")}
    if "pytorch_model.bin.index.json" in usable:
        index, _, unread = _read_json(usable["pytorch_model.bin.index.json"], "", model_name, "weights_invalid")
        if unread:  # the shards it names are unknown here: every .bin is held to the rules of loaded weights
            return {n for n in usable if n.endswith(".bin")}
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            names.update(str(v) for v in weight_map.values())
    return names


def _check_index(
    usable: dict[str, Path], index_name: str, listed: set[str], report: FolderReport, model_name: str | None
) -> set[str] | None:
    """The shards an index names (None when it is left to transformers); its problems go into the report."""
    data, problem, notice = _read_json(usable[index_name], index_name, model_name, "weights_invalid")
    if problem:
        report.errors.append(problem)
        return set()
    if notice:
        report.warnings.append(notice)
        return None
    shards, errors, warnings = check_index(index_name, data, listed, usable, redownload_hint(model_name))
    report.errors.extend(errors)
    report.warnings.extend(warnings)
    return shards


def _check_weights(usable: dict[str, Path], report: FolderReport, model_name: str | None, config: dict | None) -> None:
    errors_before = len(report.errors)
    weights = [n for n in usable if n.endswith((".safetensors", ".bin")) and "/" not in n]
    loaded = _loaded_bins(usable, model_name)
    shapes: dict[str, dict[str, list[int]]] = {}
    unread = False
    for rel in weights:
        if rel.endswith(".safetensors"):
            shapes[rel] = {}
            problem, notice = _check_safetensors(rel, usable[rel], model_name, shapes[rel])
            if notice:
                report.warnings.append(notice)
                unread = True
        else:
            problem = check_bin(rel, usable[rel], loaded=rel in loaded, corrupt_hint=redownload_hint(model_name))
        if problem:
            report.errors.append(problem)
    listed = {e.name for e in report.files}
    indexed = {name: _check_index(usable, name, listed, report, model_name) for name in INDEX_FILES if name in usable}
    if not weights:
        ggufs = gguf_files(usable)
        only = f" There is only GGUF ({', '.join(ggufs[:3])}), which transformers does not train." if ggufs else ""
        report.warnings.append(
            Problem(
                "no_weights",
                f"No weights (*.safetensors or *.bin): the model can be inspected but not trained.{only}",
                "Download the full model, not only its configuration and tokenizer.",
            )
        )
    if unread or None in indexed.values():  # which tensors there are, or which files load, is not known here
        return
    model_files = loaded_safetensors(usable, {name: shards or set() for name, shards in indexed.items()})
    if config is None or len(report.errors) > errors_before or not model_files:  # shapes of broken weights mislead
        return
    merged = {key: shape for rel in model_files for key, shape in shapes.get(rel, {}).items()}
    shown = ", ".join(model_files[:2]) + (" ..." if len(model_files) > 2 else "")
    report.errors.extend(compare_config_with_weights(config, merged, shown, redownload_hint(model_name)))


def _check_own_code(
    folder: Path,
    config: dict,
    tokenizer_config: dict | None,
    report: FolderReport,
    model_name: str | None,
    trusted: bool,
) -> None:
    errors, warnings = check_remote_code(
        folder,
        config,
        tokenizer_config,
        trusted=trusted,
        model_name=model_name,
    )
    report.errors.extend(errors)
    report.warnings.extend(warnings)


def check_model_folder(
    folder: Path,
    root: Path | None = None,
    model_name: str | None = None,
    *,
    trust_remote_code: bool = False,
    context: CacheContext | None = None,
) -> FolderReport:
    """Check a model folder. Files are only read when they resolve inside `root` (default: the folder).
    `trust_remote_code`: staff allow the model's own code to run, so a model that needs it can load.
    `context`: the cache the folder is a snapshot of. The rules are described in docs/model-resolution.md."""
    context = context or CacheContext()
    report = FolderReport()
    folder = Path(folder)
    if not folder.is_dir():
        report.errors.append(
            Problem(
                "model_format_invalid",
                f"Model format invalid: {folder} is not a folder.",
                redownload_hint(model_name),
            )
        )
        return report
    try:
        usable = _scan(folder, Path(root) if root else folder, report, model_name)
    except FolderTooLarge as exc:
        report.errors.append(folder_too_large(exc, model_name))
        report.unread = True
        return report
    report.errors.extend(take_lfs_pointers(usable, {e.name: e.size for e in report.files}, model_name))
    config = _check_config(usable, folder, report, model_name, context)
    tokenizer_config = _check_tokenizer(usable, folder, report, model_name, context)
    if config is not None:
        _check_own_code(folder, config, tokenizer_config, report, model_name, trust_remote_code)
    _check_weights(usable, report, model_name, config)
    if "generation_config.json" in usable:
        _, problem, notice = _read_json(
            usable["generation_config.json"],
            "generation_config.json",
            model_name,
            "model_format_invalid",
        )
        report.errors.extend([problem] if problem else [])
        report.warnings.extend([notice] if notice else [])
    else:
        report.warnings.append(
            Problem(
                "no_generation_config",
                "No generation_config.json: generation will use transformers' defaults.",
                "Download it with the model, or add one with your preferred decoding settings.",
            )
        )
    return report
