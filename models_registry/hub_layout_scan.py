"""The cold listing's scan of a repo laid out as huggingface_hub lays it out, in one function.

Most repos of a cache are as a download left them: refs/main names a snapshot folder; the snapshot holds files (links
`../../blobs/<hash>`), no subfolder: a config.json that is a JSON object naming a model_type transformers builds, with
no auto_map; a tokenizer file, weights and a generation_config.json; blobs/ holds no partial download. For such a repo
scan_hub_layout answers exactly what repo_scan.scan_repo answers (the same signature, the same verdict: valid, no
problem) with the same system calls (refs/main read, blobs/ and the snapshot lstat'ed and listed, config.json read
through its link: 21) and little else: no helper calls, no Path objects, no per-name checks beyond the rules'.
At the first thing it does not expect (a link where a folder belongs, a subfolder, a name that is not ASCII, a missing
or odd ref, a link of another form, a listing past a model's folder limits, a config or an index the rules would say
anything about, any error) it answers None, having kept nothing and counted nothing, and the caller runs scan_repo,
which reads the repo again and says what is wrong.
"""

from __future__ import annotations

import json
import os
from itertools import islice
from operator import attrgetter
from stat import S_ISDIR, S_ISREG

from models_registry.bounded_json import MAX_PIECES
from models_registry.cache_layout import PARTIAL_SUFFIX
from models_registry.checks import INDEX_FILES, TOKENIZER_FILES, redownload_hint
from models_registry.folder_walk import Listed
from models_registry.listed import ListedModel
from models_registry.names import is_commit_hash
from models_registry.ref_files import MAX_REF_BYTES
from models_registry.remote_code import built_in_model_types
from models_registry.repo_scan import check_snapshot_index

__all__ = ["scan_hub_layout"]

_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
_BLOB_FLAGS = _READ_FLAGS | os.O_NOFOLLOW
_MAX_REF_BYTES = MAX_REF_BYTES + 1  # what repo_scan reads of refs/main at most
_BLOB_LINK = "../../blobs/"
_PARTIAL_END = PARTIAL_SUFFIX + "/"
_NAME = attrgetter("name")
_JSON = json.JSONDecoder()  # json.loads' own settings
_JSON_SPACE = " \t\n\r"  # what json.loads skips before and after the value


def scan_hub_layout(
    repo: str, folder: str, root: str, root_fd: int, name: str, counted: Listed
) -> tuple[tuple, ListedModel] | None:
    """(signature, verdict) of the repo folder `repo`, the entry `folder` of the cache folder `root` (`root_fd`:
    repo_scan.open_root's descriptor of it), as scan_repo gives them; or None where the repo is not laid out as
    huggingface_hub lays it out. `name`, the model name, is one names.name_error accepts; the caller makes sure that
    `repo` encodes as UTF-8, so that the verdict can be shown as it is. The entries listed are added to `counted` only
    when it answers (as scan_repo adds them to its counting_entries block); `counted.max_entries` bounds each listing
    as folder_walk bounds it."""
    try:
        fd = os.open(folder + "/refs/main", _BLOB_FLAGS, dir_fd=root_fd)  # a ref that is a link: scan_repo's
    except OSError:
        return None
    try:
        ref = os.fstat(fd)
        if not S_ISREG(ref.st_mode):
            return None
        want = min(ref.st_size, _MAX_REF_BYTES - 1) + 1  # as much as scan_repo reads
        raw = os.read(fd, want)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) < min(ref.st_size, want):  # a short read, which scan_repo reads on from
        return None
    commit = raw.strip().decode("ascii", "replace")
    if not is_commit_hash(commit):
        return None
    snapshot_at = folder + "/snapshots/" + commit
    # The signature's stats before the listings they describe, as scan_repo takes them. An lstat: a blobs/ or a
    # snapshot that is a link is scan_repo's to judge, and the mtime of a folder is what stat gives.
    try:
        blobs_stat = os.stat(folder + "/blobs", dir_fd=root_fd, follow_symlinks=False)
        snapshot_stat = os.stat(snapshot_at, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return None
    if not (S_ISDIR(blobs_stat.st_mode) and S_ISDIR(snapshot_stat.st_mode)):
        return None
    snapshot = repo + "/snapshots/" + commit
    limit = counted.max_entries
    names = set()
    try:
        with os.scandir(snapshot) as listing:
            for entry in islice(listing, limit + 1):
                if entry.is_dir(follow_symlinks=False):  # a subfolder: its entries count too (folder_walk)
                    return None
                names.add(entry.name)
        with os.scandir(repo + "/blobs") as listing:
            blobs = list(map(_NAME, islice(listing, limit + 1)))
    except OSError:
        return None
    if len(names) > limit or len(blobs) > limit:
        return None
    # A name holds no '/': in the names joined and ended by '/', "<suffix>/" is found exactly where a name ends with
    # the suffix.
    joined = "/".join(names) + "/"
    if (
        _PARTIAL_END in "/".join(blobs) + "/"
        or not joined.isascii()
        or "config.json" not in names
        or "generation_config.json" not in names
        or names.isdisjoint(TOKENIZER_FILES)
        or (".safetensors/" not in joined and ".bin/" not in joined)
    ):
        return None
    try:
        target = os.readlink(snapshot_at + "/config.json", dir_fd=root_fd)
    except OSError:
        return None
    blob = target[len(_BLOB_LINK) :]
    if not (target.startswith(_BLOB_LINK) and blob.isascii() and blob.isalnum()):
        return None
    try:
        fd = os.open(folder + "/blobs/" + blob, _BLOB_FLAGS, dir_fd=root_fd)
    except OSError:
        return None
    try:
        config_stat = os.fstat(fd)
        # fewer bytes than bounded_json's count of values: parsed here as bounded_json parses it
        if not S_ISREG(config_stat.st_mode) or config_stat.st_size >= MAX_PIECES:
            return None
        raw = os.read(fd, config_stat.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(raw) < config_stat.st_size:
        return None
    try:
        text = raw.decode("utf-8").strip(_JSON_SPACE)
        config, end = _JSON.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if end != len(text) or not isinstance(config, dict) or "auto_map" in config:
        return None
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in built_in_model_types():
        return None
    item = ListedModel(model_name=name, source="cache", path=snapshot, revision=commit)
    for index_name in INDEX_FILES:
        if index_name in names:
            hint = redownload_hint(name)
            check_snapshot_index(item, snapshot, index_name, names, root, hint, (root_fd, snapshot_at))
            if item.errors or item.warnings:  # scan_repo words them, and makes them showable
                return None
    counted.entries += len(names) + len(blobs)
    return (ref.st_mtime_ns, blobs_stat.st_mtime_ns, snapshot_stat.st_mtime_ns), item
