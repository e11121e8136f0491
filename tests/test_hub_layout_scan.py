"""The cold listing's scan of huggingface_hub's own layout (models_registry/hub_layout_scan.py) answers exactly as the
general scan (repo_scan) on every repo it answers for, answers for the layouts downloads leave, and leaves every other
layout to the general scan. Real HF cache layouts on tmp_path, built with tests/hfcache.py."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from models_registry import listing
from models_registry.bounded_json import MAX_PIECES
from models_registry.folder_walk import Listed, counting_entries
from models_registry.hub_layout_scan import scan_hub_layout
from models_registry.names import name_from_folder, repo_folder_name
from models_registry.repo_scan import open_root
from tests.hfcache import (
    COMMIT_A,
    COMMIT_B,
    SMALL_CONFIG,
    add_file,
    make_model_repo,
    make_safetensors,
    set_ref,
    write_blob,
)
from tests.odd_cache_layouts import odd_layouts


def _snap(cache: Path, name: str, commit: str = COMMIT_A) -> Path:
    return cache / repo_folder_name(name) / "snapshots" / commit


def _sharded(cache: Path, name: str, index_name: str, shards: list[str], present: list[str]) -> None:
    make_model_repo(cache, name, weights=False)
    add_file(cache, name, index_name, {"metadata": {}, "weight_map": {f"w{i}": s for i, s in enumerate(shards)}})
    for shard in present:
        add_file(cache, name, shard, make_safetensors())


SHARDS = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
BIN_SHARDS = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]


def hub_layouts(cache: Path) -> list[str]:
    """Repos as downloads leave them, each a variation people's caches hold; returns their names."""
    make_model_repo(cache, "hub/plain")
    _sharded(cache, "hub/sharded", "model.safetensors.index.json", SHARDS, SHARDS)
    _sharded(cache, "hub/bin-sharded", "pytorch_model.bin.index.json", BIN_SHARDS, BIN_SHARDS)
    make_model_repo(cache, "hub/bin", weights=False)
    add_file(cache, "hub/bin", "pytorch_model.bin", b"not read by the list")
    make_model_repo(cache, "hub/sentencepiece", tokenizer=False)
    add_file(cache, "hub/sentencepiece", "tokenizer.model", b"\x0a\x03spm")
    make_model_repo(cache, "hub/two-revisions", ref=False)  # the older revision lacks its config
    (_snap(cache, "hub/two-revisions") / "config.json").unlink()
    make_model_repo(cache, "hub/two-revisions", COMMIT_B)
    make_model_repo(cache, "hub/extras")
    for rel, data in {
        "README.md": "# model\n",
        ".gitattributes": "*.safetensors filter=lfs\n",
        "chat_template.jinja": "{{ messages }}",
        "special_tokens_map.json": {"eos_token": "</s>"},
        "LICENSE": "MIT",
        "merges.txt": "#version: 0.2\n",
        "vocab.json": {"a": 0},
        "model.safetensors.index.json.lock": "",  # a name ending in neither weight suffix
    }.items():
        add_file(cache, "hub/extras", rel, data)
    make_model_repo(cache, "hub/pretty-config", config={})
    add_file(cache, "hub/pretty-config", "config.json", json.dumps(SMALL_CONFIG, indent=2) + "\n")
    make_model_repo(cache, "hub/ref-newline")
    (cache / repo_folder_name("hub/ref-newline") / "refs" / "main").write_text(COMMIT_A + "\n")
    make_model_repo(cache, "hub/other-refs")
    make_model_repo(cache, "hub/other-refs", COMMIT_B, ref=False)
    set_ref(cache, "hub/other-refs", COMMIT_B, "pr/1")
    make_model_repo(cache, "hub/copied-tokenizer")  # a file that is no link: read by neither scan
    tokenizer = _snap(cache, "hub/copied-tokenizer") / "tokenizer.json"
    data = tokenizer.read_bytes()
    tokenizer.unlink()
    tokenizer.write_bytes(data)
    make_model_repo(cache, "hub/large-config", config={**SMALL_CONFIG, "note": "x" * (MAX_PIECES // 2)})
    make_model_repo(cache, "hub/qwen2", config={"model_type": "qwen2", "vocab_size": 8, "hidden_size": 4})
    make_model_repo(cache, "hub/Org_1.x", config={**SMALL_CONFIG, "torch_dtype": "bfloat16"})
    return [
        "hub/plain",
        "hub/sharded",
        "hub/bin-sharded",
        "hub/bin",
        "hub/sentencepiece",
        "hub/two-revisions",
        "hub/extras",
        "hub/pretty-config",
        "hub/ref-newline",
        "hub/other-refs",
        "hub/copied-tokenizer",
        "hub/large-config",
        "hub/qwen2",
        "hub/Org_1.x",
    ]


def other_layouts(cache: Path) -> list[str]:
    """Repos with something the general scan has to say or to look at more closely; returns their names."""
    make_model_repo(cache, "other/no-generation-config", generation_config=False)
    make_model_repo(cache, "other/no-weights", weights=False)
    make_model_repo(cache, "other/no-tokenizer", tokenizer=False)
    make_model_repo(cache, "other/subfolder")
    add_file(cache, "other/subfolder", "onnx/model.onnx", b"onnx")
    make_model_repo(cache, "other/utf8-file-name")
    add_file(cache, "other/utf8-file-name", "caf\u00e9.txt", "x")
    make_model_repo(cache, "other/not-utf8-file-name")
    add_file(cache, "other/not-utf8-file-name", os.fsdecode(b"caf\xe9.txt"), "x")  # Latin-1 bytes
    make_model_repo(cache, "other/leftover-partial")
    (cache / repo_folder_name("other/leftover-partial") / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"p")
    _sharded(cache, "other/stale-index", "model.safetensors.index.json", SHARDS, [])
    add_file(cache, "other/stale-index", "model.safetensors", make_safetensors())
    _sharded(cache, "other/missing-shard", "model.safetensors.index.json", SHARDS, SHARDS[:1])
    make_model_repo(cache, "other/auto-map", config={**SMALL_CONFIG, "auto_map": {"AutoConfig": "c.C"}})
    make_model_repo(cache, "other/unknown-type", config={"model_type": "no-such-type"})
    make_model_repo(cache, "other/no-model-type", config={"vocab_size": 8})
    make_model_repo(cache, "other/config-list", config={})
    add_file(cache, "other/config-list", "config.json", "[1]")
    make_model_repo(cache, "other/config-too-long", config={**SMALL_CONFIG, "note": "x" * MAX_PIECES})
    make_model_repo(cache, "other/no-ref", ref=False)
    make_model_repo(cache, "other/dangling-ref")
    set_ref(cache, "other/dangling-ref", COMMIT_B)
    make_model_repo(cache, "other/snapshot-link", COMMIT_B)
    set_ref(cache, "other/snapshot-link", COMMIT_A)
    _snap(cache, "other/snapshot-link").symlink_to(COMMIT_B)
    make_model_repo(cache, "other/blobs-link")  # blobs/ a link to another repo's, inside the cache
    blobs = cache / repo_folder_name("other/blobs-link") / "blobs"
    shutil.copytree(blobs, cache / "shared-blobs")
    shutil.rmtree(blobs)
    blobs.symlink_to("../shared-blobs")
    make_model_repo(cache, "other/config-regular")
    config = _snap(cache, "other/config-regular") / "config.json"
    config.unlink()
    config.write_text(json.dumps(SMALL_CONFIG))
    make_model_repo(cache, "other/config-from-other-repo")  # a link to another repo's blob, inside the cache
    blob = write_blob(cache / repo_folder_name("hub/plain"), json.dumps(SMALL_CONFIG).encode())
    config = _snap(cache, "other/config-from-other-repo") / "config.json"
    config.unlink()
    config.symlink_to(os.path.relpath(blob, config.parent))
    make_model_repo(cache, "other/config-missing-blob")
    (_snap(cache, "other/config-missing-blob") / "config.json").resolve().unlink()
    return [
        "other/no-generation-config",
        "other/no-weights",
        "other/no-tokenizer",
        "other/subfolder",
        "other/utf8-file-name",
        "other/not-utf8-file-name",
        "other/leftover-partial",
        "other/stale-index",
        "other/missing-shard",
        "other/auto-map",
        "other/unknown-type",
        "other/no-model-type",
        "other/config-list",
        "other/config-too-long",
        "other/no-ref",
        "other/dangling-ref",
        "other/snapshot-link",
        "other/blobs-link",
        "other/config-regular",
        "other/config-from-other-repo",
        "other/config-missing-blob",
    ]


def _answers(cache: Path) -> dict[str, tuple[dict | None, dict]]:
    """For each repo folder of `cache` with a name the listing accepts at once: (what scan_hub_layout answers, what
    the general scan answers), each as {signature, verdict, entries counted}."""
    root = str(cache)
    root_fd = open_root(root)
    assert root_fd is not None
    answers = {}
    try:
        for folder in sorted(os.listdir(root)):
            name = listing._plain_folder_name(folder)
            if name is None or os.path.islink(cache / folder):
                continue
            repo = f"{root}/{folder}"
            with counting_entries() as spent:
                signature, item = listing._scanned(folder, repo, root, root_fd)
            general = {"signature": signature, "verdict": item.model_dump(mode="json"), "entries": spent.entries}
            counted = Listed(spent.max_entries)
            found = scan_hub_layout(repo, folder, root, root_fd, name, counted)
            fast = None
            if found is not None:
                fast = {"signature": found[0], "verdict": found[1].model_dump(mode="json"), "entries": counted.entries}
            else:
                assert counted.entries == 0, folder  # nothing counted when it leaves the repo to the general scan
            answers[name] = (fast, general)
    finally:
        os.close(root_fd)
    return answers


def test_the_hub_layout_scan_answers_as_the_general_scan_on_downloads_and_leaves_the_rest_to_it(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    common, other = hub_layouts(cache), other_layouts(cache)
    answers = _answers(cache)
    assert set(common) | set(other) <= set(answers)
    for name, (fast, general) in answers.items():
        assert fast is None or fast == general, name
    for name in common:
        fast, general = answers[name]
        assert fast is not None, name
        assert general["verdict"]["valid"] and not general["verdict"]["warnings"], name
    for name in other:
        fast, general = answers[name]
        assert fast is None, name
    assert answers["hub/two-revisions"][0]["verdict"]["revision"] == COMMIT_B
    assert answers["hub/other-refs"][0]["verdict"]["revision"] == COMMIT_A


def test_on_odd_layouts_the_hub_layout_scan_answers_as_the_general_scan_or_not_at_all(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    odd_layouts(cache)
    answers = _answers(cache)
    answered = {name for name, (fast, _) in answers.items() if fast is not None}
    for name in answered:
        fast, general = answers[name]
        assert fast == general, name
    # what the odd layouts hold in huggingface_hub's form: a duplicate key, a ref with a trailing newline, all shards
    assert {"json/case-16", "refs/case-4", "shards/complete"} <= answered
    assert len(answered) < len(answers) / 4


def test_a_listing_past_a_model_folders_limit_is_left_to_the_general_scan(tmp_path, settings):
    cache = tmp_path / "hub"
    make_model_repo(cache, "hub/five-files")  # 5 files, 5 blobs
    make_model_repo(cache, "hub/seven-files")
    add_file(cache, "hub/seven-files", "README.md", "# model\n")
    add_file(cache, "hub/seven-files", "LICENSE", "MIT")
    settings.MTM_MODEL_FOLDER_MAX_ENTRIES = 6
    answers = _answers(cache)
    fast, general = answers["hub/five-files"]
    assert fast == general and general["entries"] == 10
    fast, general = answers["hub/seven-files"]
    assert fast is None
    [problem] = general["verdict"]["errors"]
    assert problem["code"] == "model_format_invalid" and "MTM_MODEL_FOLDER_MAX_ENTRIES" in problem["message"]


def test_the_listing_gives_the_general_scans_verdicts_and_signatures(tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    hub_layouts(cache)
    other_layouts(cache)
    odd_layouts(cache)
    answers = _answers(cache)
    listing.forget(cache)
    listed = {item.model_name: item.model_dump(mode="json") for item in listing.list_cached(cache)}
    kept = listing._memo[os.path.abspath(cache)]
    for name, (_, general) in answers.items():
        assert listed[name] == general["verdict"], name
        assert kept[repo_folder_name(name)][0] == general["signature"], name


def test_the_quick_folder_name_is_name_from_folders_when_the_quick_name_check_accepts_it():
    rng = random.Random(17)
    alphabet = "aZ09_-."
    names = ["org/model", "Org_1/Model-2.5-it", "org/name.git", "x" * 48 + "/" + "y" * 47, "x" * 48 + "/" + "y" * 48]
    names += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        + "/"
        + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 100 if n % 10 == 0 else 10)))
        for n in range(20_000)
    ]
    folders = [repo_folder_name(name) for name in names]
    folders += [
        "models--a--b--c",
        "models--gpt2",
        "models---a--b",
        "models--a----b",
        "datasets--a--b",
        "models--a--b\n",
    ]
    for folder in folders:
        name = name_from_folder(folder)
        accepted = name is not None and listing._PLAIN_NAME.fullmatch(name) and listing._name_problem(name) is None
        assert listing._plain_folder_name(folder) == (name if accepted else None), folder


@pytest.mark.parametrize("root_name", ["caf\u00e9", "plain"])
def test_a_cache_whose_path_is_not_ascii_lists_the_same(tmp_path, root_name):
    cache = tmp_path / root_name / "hub"
    make_model_repo(cache, "hub/plain")
    answers = _answers(cache)
    fast, general = answers["hub/plain"]
    assert fast == general and general["verdict"]["valid"]
    listing.forget(cache)
    [item] = listing.list_cached(cache)
    assert item.model_dump(mode="json") == general["verdict"]
