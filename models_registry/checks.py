"""Format checks of one model folder: config, tokenizer, weights and shards, read without loading tensors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from models_registry.pickle_scan import check_bin
from models_registry.remote_code import check_remote_code
from mtm.shared.paths import is_within
from mtm.shared.problems import Problem

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MAX_JSON_BYTES = (
    64 * 1024 * 1024
)  # a tokenizer.json of a large vocabulary is ~20 MB; anything past this is not JSON config


@dataclass
class FileEntry:
    name: str
    size: int | None
    symlink: bool = False

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "symlink": self.symlink}


@dataclass
class FolderReport:
    files: list[FileEntry] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

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
    """Every file under `folder` that is safe to read, by its relative name. Links leaving `root` are refused."""
    usable: dict[str, Path] = {}
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(folder):
        # os.walk does not descend into symlinked folders; report those that point outside the root.
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full) and not is_within(os.path.realpath(full), real_root):
                report.errors.append(_unsafe(os.path.relpath(full, folder), full, real_root))
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            rel = Path(os.path.relpath(full, folder)).as_posix()
            is_link = os.path.islink(full)
            target = os.path.realpath(full)
            if not is_within(target, real_root):
                report.errors.append(_unsafe(rel, full, real_root))
                report.files.append(FileEntry(rel, None, is_link))
                continue
            try:
                size = os.stat(target).st_size
            except FileNotFoundError:
                report.errors.append(
                    Problem(
                        "download_incomplete",
                        f"Download incomplete: {rel} points to {os.readlink(full)}, which does not exist.",
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


def _unsafe(rel: str, full: str, root: str) -> Problem:
    return Problem(
        "unsafe_symlink",
        f"Unsafe symlink: {rel} points to {os.readlink(full) if os.path.islink(full) else full}, outside {root}. "
        "It was not followed.",
        "Replace the link with the real file, or move the model inside the cache or override folder.",
    )


def _read_json(path: Path, rel: str, model_name: str | None, code: str) -> tuple[object | None, Problem | None]:
    hint = redownload_hint(model_name)
    if not path.is_file():
        return None, Problem(code, f"Model format invalid: {rel} is not a regular file.", hint)
    if path.stat().st_size > MAX_JSON_BYTES:
        return None, Problem(
            code,
            f"Model format invalid: {rel} is larger than {MAX_JSON_BYTES >> 20} MiB.",
            hint,
        )
    try:
        raw = path.read_bytes()
    except PermissionError:
        return None, Problem(
            code,
            f"Model format invalid: {rel} cannot be read (permission denied).",
            hint,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem(
            code,
            f"Model format invalid: {rel} is not UTF-8 text (byte {exc.start}).",
            hint,
        )
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, Problem(
            code,
            f"Model format invalid: {rel} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).",
            hint,
        )


def _check_config(usable: dict[str, Path], folder: Path, report: FolderReport, model_name: str | None) -> dict | None:
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
            report.errors.append(
                Problem(
                    "model_format_invalid",
                    f"Model format invalid: missing config.json in {folder}.",
                    hint,
                )
            )
        return None
    data, problem = _read_json(path, "config.json", model_name, "model_format_invalid")
    if problem:
        report.errors.append(problem)
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


def _check_tokenizer(usable: dict[str, Path], folder: Path, report: FolderReport, model_name: str | None) -> None:
    present = [name for name in TOKENIZER_FILES if name in usable]
    if not present:
        report.errors.append(
            Problem(
                "tokenizer_missing",
                f"Model format invalid: no tokenizer file in {folder} (expected one of {', '.join(TOKENIZER_FILES)}).",
                redownload_hint(model_name),
            )
        )
        return
    for name in present:
        if name.endswith(".json"):
            data, problem = _read_json(usable[name], name, model_name, "tokenizer_invalid")
            if problem:
                report.errors.append(problem)
            elif not isinstance(data, dict):
                report.errors.append(
                    Problem(
                        "tokenizer_invalid",
                        f"Model format invalid: {name} is not a JSON object.",
                        redownload_hint(model_name),
                    )
                )
        elif usable[name].stat().st_size == 0:
            report.errors.append(
                Problem(
                    "tokenizer_invalid",
                    f"Model format invalid: {name} is empty.",
                    redownload_hint(model_name),
                )
            )


def _check_safetensors(rel: str, path: Path, model_name: str | None) -> Problem | None:
    try:
        # safe_open parses and checks the header (size, JSON, dtypes, offsets covering the file exactly)
        # and maps the file without reading any tensor data.
        with safe_open(str(path), framework="numpy"):
            return None
    except (SafetensorError, OSError, ValueError) as exc:
        return Problem(
            "weights_invalid",
            f"Model format invalid: weights file {rel} is corrupt: {exc}.",
            redownload_hint(model_name),
        )


def _loaded_bins(usable: dict[str, Path], model_name: str | None) -> set[str]:
    """The .bin files transformers loads as weights: pytorch_model*.bin, adapter_model.bin and the shards its index
    names. Others, like training_args.bin, pickle other things on purpose and training never unpickles them."""
    names = {n for n in usable if n.endswith(".bin") and (n.startswith("pytorch_model") or n == "adapter_model.bin")}
    if "pytorch_model.bin.index.json" in usable:
        index, _ = _read_json(usable["pytorch_model.bin.index.json"], "", model_name, "weights_invalid")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            names.update(str(v) for v in weight_map.values())
    return names


def _check_weights(usable: dict[str, Path], report: FolderReport, model_name: str | None) -> None:
    weights = [n for n in usable if n.endswith((".safetensors", ".bin")) and "/" not in n]
    loaded = _loaded_bins(usable, model_name)
    for rel in weights:
        if rel.endswith(".safetensors"):
            problem = _check_safetensors(rel, usable[rel], model_name)
        else:
            problem = check_bin(rel, usable[rel], loaded=rel in loaded, corrupt_hint=redownload_hint(model_name))
        if problem:
            report.errors.append(problem)
    listed = {e.name for e in report.files}
    for index_name in INDEX_FILES:
        if index_name not in usable:
            continue
        data, problem = _read_json(usable[index_name], index_name, model_name, "weights_invalid")
        if problem:
            report.errors.append(problem)
            continue
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            report.errors.append(
                Problem(
                    "weights_invalid",
                    f"Model format invalid: {index_name} has no weight_map.",
                    redownload_hint(model_name),
                )
            )
            continue
        for shard in sorted({str(v) for v in weight_map.values()}):
            if shard not in listed:
                report.errors.append(
                    Problem(
                        "shard_missing",
                        f"Model format invalid: shard {shard} named in {index_name} is missing.",
                        redownload_hint(model_name),
                    )
                )
    if not weights:
        report.warnings.append(
            Problem(
                "no_weights",
                "No weights (*.safetensors or *.bin): the model can be inspected but not trained.",
                "Download the full model, not only its configuration and tokenizer.",
            )
        )


def _check_own_code(
    usable: dict[str, Path], folder: Path, config: dict, report: FolderReport, model_name: str | None, trusted: bool
) -> None:
    tokenizer_config = None
    if "tokenizer_config.json" in usable:
        tokenizer_config, _ = _read_json(usable["tokenizer_config.json"], "", model_name, "tokenizer_invalid")
    errors, warnings = check_remote_code(
        folder,
        config,
        tokenizer_config if isinstance(tokenizer_config, dict) else None,
        trusted=trusted,
        model_name=model_name,
    )
    report.errors.extend(errors)
    report.warnings.extend(warnings)


def check_model_folder(
    folder: Path, root: Path | None = None, model_name: str | None = None, *, trust_remote_code: bool = False
) -> FolderReport:
    """Check a model folder. Files are only read when they resolve inside `root` (default: the folder).
    `trust_remote_code`: staff allow the model's own code to run, so a model that needs it can load."""
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
    usable = _scan(folder, Path(root) if root else folder, report, model_name)
    config = _check_config(usable, folder, report, model_name)
    _check_tokenizer(usable, folder, report, model_name)
    if config is not None:
        _check_own_code(usable, folder, config, report, model_name, trust_remote_code)
    _check_weights(usable, report, model_name)
    if "generation_config.json" in usable:
        _, problem = _read_json(
            usable["generation_config.json"],
            "generation_config.json",
            model_name,
            "model_format_invalid",
        )
        if problem:
            report.errors.append(problem)
    else:
        report.warnings.append(
            Problem(
                "no_generation_config",
                "No generation_config.json: generation will use transformers' defaults.",
                "Download it with the model, or add one with your preferred decoding settings.",
            )
        )
    return report
