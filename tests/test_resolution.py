"""The resolver against real cache layouts: one healthy model, then every way a model can be broken."""

from __future__ import annotations

import os
import string
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models_registry.checks import check_model_folder
from models_registry.names import name_error, repo_folder_name
from models_registry.resolution import hf_cache_dir, resolve
from tests.hfcache import (
    COMMIT_A,
    COMMIT_B,
    SMALL_TENSORS,
    add_file,
    make_model_repo,
    make_safetensors,
    set_ref,
    write_blob,
)


def codes(problems) -> list[str]:
    return [p.code for p in problems]


def test_tiny_llama_in_cache_resolves(tiny_llama_in_cache, hf_cache):
    name, snapshot = tiny_llama_in_cache
    res = resolve(name, cache_dir=hf_cache)
    assert res.valid, res.errors
    assert res.source == "cache"
    assert res.path == str(snapshot)
    assert res.revision == snapshot.name
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {f.name for f in res.files}
    assert res.warnings == []
    assert all(f.symlink for f in res.files)


def test_missing_model_message_and_hint(hf_cache):
    res = resolve("meta-llama/Llama-3.2-3B-Instruct", cache_dir=hf_cache)
    assert not res.valid
    [err] = res.errors
    assert err.code == "model_not_found"
    assert err.message.startswith(
        "Model 'meta-llama/Llama-3.2-3B-Instruct' not found. Please ensure the model is downloaded"
    )
    assert "models--meta-llama--Llama-3.2-3B-Instruct" in err.message
    assert "hf download meta-llama/Llama-3.2-3B-Instruct" in err.hint
    assert "huggingface-cli download meta-llama/Llama-3.2-3B-Instruct" in err.hint
    assert f"ls {hf_cache}/models--meta-llama--Llama-3.2-3B-Instruct/" in err.hint
    assert "Model Cache Path" in err.hint and "Override" in err.hint
    assert res.searched == [f"cache: {hf_cache / 'models--meta-llama--Llama-3.2-3B-Instruct'}"]


def test_missing_cache_folder_is_named(tmp_path):
    res = resolve("org/model", cache_dir=tmp_path / "nowhere")
    assert codes(res.errors) == ["model_not_found"]
    assert "does not exist" in res.errors[0].message and str(tmp_path / "nowhere") in res.errors[0].message


def test_override_wins_over_cache(hf_cache, copy_of_tiny_llama):
    make_model_repo(hf_cache, "org/model", tokenizer=False)  # broken in the cache
    res = resolve("org/model", cache_dir=hf_cache, override_path=str(copy_of_tiny_llama))
    assert res.valid, res.errors
    assert res.source == "override" and res.path == str(copy_of_tiny_llama) and res.revision is None


def test_override_to_missing_folder_fails_explicitly(hf_cache, tmp_path):
    make_model_repo(hf_cache, "org/model")
    res = resolve("org/model", cache_dir=hf_cache, override_path=str(tmp_path / "gone"))
    assert codes(res.errors) == ["model_not_found"]
    assert res.errors[0].message.startswith("Model 'org/model' not found. Please ensure the model is downloaded")
    assert str(tmp_path / "gone") in res.errors[0].message


def test_relative_override_is_refused(hf_cache):
    res = resolve("org/model", cache_dir=hf_cache, override_path="models/x")
    assert codes(res.errors) == ["override_invalid"]


def test_ref_with_trailing_newline_is_stripped(hf_cache):
    make_model_repo(hf_cache, "org/model")
    (hf_cache / "models--org--model" / "refs" / "main").write_text(COMMIT_A + "\n")
    res = resolve("org/model", cache_dir=hf_cache)
    assert res.valid and res.revision == COMMIT_A and res.warnings == []


def test_missing_ref_with_one_snapshot_warns(hf_cache):
    make_model_repo(hf_cache, "org/model", ref=False)
    res = resolve("org/model", cache_dir=hf_cache)
    assert res.valid and res.revision == COMMIT_A
    assert codes(res.warnings) == ["ref_main_unusable"]
    assert "refs/main is missing" in res.warnings[0].message


def test_dangling_ref_with_one_snapshot_warns(hf_cache):
    make_model_repo(hf_cache, "org/model", ref=False)
    set_ref(hf_cache, "org/model", COMMIT_B)
    res = resolve("org/model", cache_dir=hf_cache)
    assert res.valid and res.revision == COMMIT_A
    assert COMMIT_B in res.warnings[0].message


def test_missing_ref_with_two_snapshots_fails_naming_them(hf_cache):
    make_model_repo(hf_cache, "org/model", COMMIT_A, ref=False)
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False)
    set_ref(hf_cache, "org/model", COMMIT_A, ref="v1")
    res = resolve("org/model", cache_dir=hf_cache)
    assert codes(res.errors) == ["revision_not_found"]
    msg = res.errors[0].message
    assert COMMIT_A in msg and COMMIT_B in msg and "v1" in msg


def test_explicit_revision_by_ref_and_by_hash(hf_cache):
    make_model_repo(hf_cache, "org/model", COMMIT_A)
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False)
    set_ref(hf_cache, "org/model", COMMIT_B, ref="v2")
    assert resolve("org/model", "v2", cache_dir=hf_cache).revision == COMMIT_B
    assert resolve("org/model", COMMIT_B, cache_dir=hf_cache).revision == COMMIT_B
    assert resolve("org/model", cache_dir=hf_cache).revision == COMMIT_A


def test_explicit_revision_never_falls_back(hf_cache):
    make_model_repo(hf_cache, "org/model")
    for rev in ("v9", "c" * 40, "refs/pr/1"):
        res = resolve("org/model", rev, cache_dir=hf_cache)
        assert codes(res.errors) == ["revision_not_found"], rev
        assert rev in res.errors[0].message


@pytest.mark.parametrize("rev", ["../main", "/etc/passwd", "a//b", "-x", "main\x00", "x" * 300, "v1.lock"])
def test_hostile_revisions_refused(hf_cache, rev):
    make_model_repo(hf_cache, "org/model")
    assert codes(resolve("org/model", rev, cache_dir=hf_cache).errors) == ["invalid_revision"]


# --- broken models: each a real cache layout, each with its own code and a message naming the problem ----------


def _break(cache: Path, how: str) -> tuple[str, str]:
    """Build a model broken in one way; return (expected code, a fragment the message must contain)."""
    name = "org/model"
    snap = cache / repo_folder_name(name) / "snapshots" / COMMIT_A
    repo = cache / repo_folder_name(name)
    if how == "no_config":
        make_model_repo(cache, name, config={})
        (snap / "config.json").unlink()
        return "model_format_invalid", "missing config.json"
    make_model_repo(cache, name)
    if how == "config_dir":
        (snap / "config.json").unlink()
        (snap / "config.json").mkdir()
        return "model_format_invalid", "config.json is not a regular file"
    if how == "config_not_utf8":
        add_file(cache, name, "config.json", b"\xff\xfe{\x00}")
        return "model_format_invalid", "config.json is not UTF-8"
    if how == "config_not_json":
        add_file(cache, name, "config.json", "{'model_type': 'llama'}")
        return "model_format_invalid", "config.json is not valid JSON"
    if how == "config_truncated":
        add_file(cache, name, "config.json", '{"model_type": "lla')
        return "model_format_invalid", "config.json is not valid JSON"
    if how == "config_array":
        add_file(cache, name, "config.json", "[1, 2]")
        return "model_format_invalid", "not an object"
    if how == "config_empty":
        add_file(cache, name, "config.json", b"")
        return "model_format_invalid", "config.json is not valid JSON"
    if how == "no_tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (snap / f).unlink()
        return "tokenizer_missing", "no tokenizer file"
    if how == "tokenizer_json_broken":
        add_file(cache, name, "tokenizer.json", '{"model": ')
        return "tokenizer_invalid", "tokenizer.json is not valid JSON"
    if how == "tokenizer_config_list":
        add_file(cache, name, "tokenizer_config.json", "[]")
        return "tokenizer_invalid", "tokenizer_config.json is not a JSON object"
    if how == "tokenizer_model_empty":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (snap / f).unlink()
        add_file(cache, name, "tokenizer.model", b"")
        return "tokenizer_invalid", "tokenizer.model is empty"
    if how == "safetensors_truncated":
        add_file(cache, name, "model.safetensors", make_safetensors()[:-10])
        return "weights_invalid", "model.safetensors is corrupt"
    if how == "safetensors_trailing_bytes":
        add_file(cache, name, "model.safetensors", make_safetensors() + b"junk")
        return "weights_invalid", "model.safetensors is corrupt"
    if how == "safetensors_header_oversized":
        add_file(cache, name, "model.safetensors", struct.pack("<Q", 2**40) + b"{}")
        return "weights_invalid", "model.safetensors is corrupt"
    if how == "safetensors_header_not_json":
        add_file(cache, name, "model.safetensors", struct.pack("<Q", 8) + b"not-json")
        return "weights_invalid", "model.safetensors is corrupt"
    if how == "safetensors_tiny":
        add_file(cache, name, "model.safetensors", b"\x01\x02")
        return "weights_invalid", "model.safetensors is corrupt"
    if how == "bin_garbage":
        (snap / "model.safetensors").unlink()
        add_file(cache, name, "pytorch_model.bin", b"this is not a checkpoint")
        return "weights_invalid", "pytorch_model.bin is corrupt"
    if how == "bin_truncated_zip":
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"w": torch.zeros(8)}, buf)
        (snap / "model.safetensors").unlink()
        add_file(cache, name, "pytorch_model.bin", buf.getvalue()[: len(buf.getvalue()) // 2])
        return "weights_invalid", "pytorch_model.bin is corrupt"
    if how == "shard_missing":
        (snap / "model.safetensors").unlink()
        add_file(cache, name, "model-00001-of-00002.safetensors", make_safetensors({"a": (2, 2)}))
        index = {
            "metadata": {},
            "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
        }
        add_file(cache, name, "model.safetensors.index.json", index)
        return "shard_missing", "model-00002-of-00002.safetensors"
    if how == "bin_shard_missing":
        add_file(cache, name, "pytorch_model.bin.index.json", {"weight_map": {"a": "pytorch_model-00001-of-00001.bin"}})
        return "shard_missing", "pytorch_model-00001-of-00001.bin named in pytorch_model.bin.index.json"
    if how == "index_not_json":
        add_file(cache, name, "model.safetensors.index.json", "{")
        return "weights_invalid", "model.safetensors.index.json is not valid JSON"
    if how == "index_without_map":
        add_file(cache, name, "model.safetensors.index.json", {"metadata": {}})
        return "weights_invalid", "has no weight_map"
    if how == "incomplete_blob":  # interrupted while fetching the weights: a partial blob, no link yet
        blob = Path(os.path.realpath(snap / "model.safetensors"))
        blob.rename(blob.with_name(blob.name + ".incomplete"))
        (snap / "model.safetensors").unlink()
        return "download_incomplete", "interrupted download"
    if how == "dangling_blob":
        blob = Path(os.path.realpath(snap / "model.safetensors"))
        blob.unlink()
        return "download_incomplete", "model.safetensors points to"
    if how == "only_incomplete_no_snapshot":
        import shutil

        shutil.rmtree(repo / "snapshots")
        (repo / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"x")
        return "download_incomplete", "interrupted download"
    if how == "empty_repo":
        import shutil

        shutil.rmtree(repo / "snapshots")
        return "model_not_found", "holds no snapshot"
    if how == "symlink_escape_file":
        outside = cache.parent / "secret.json"
        outside.write_text('{"model_type": "llama"}')
        (snap / "config.json").unlink()
        (snap / "config.json").symlink_to(outside)
        return "unsafe_symlink", "config.json points to"
    if how == "symlink_escape_relative":
        outside = cache.parent / "evil.safetensors"
        outside.write_bytes(make_safetensors())
        (snap / "model.safetensors").unlink()
        (snap / "model.safetensors").symlink_to("../../../../evil.safetensors")
        return "unsafe_symlink", "model.safetensors points to"
    if how == "symlink_escape_dir":
        (cache.parent / "elsewhere").mkdir()
        (snap / "extra").symlink_to(cache.parent / "elsewhere")
        return "unsafe_symlink", "extra points to"
    if how == "generation_config_broken":
        add_file(cache, name, "generation_config.json", "{,}")
        return "model_format_invalid", "generation_config.json is not valid JSON"
    raise AssertionError(how)


BROKEN = [
    "no_config",
    "config_dir",
    "config_not_utf8",
    "config_not_json",
    "config_truncated",
    "config_array",
    "config_empty",
    "no_tokenizer",
    "tokenizer_json_broken",
    "tokenizer_config_list",
    "tokenizer_model_empty",
    "safetensors_truncated",
    "safetensors_trailing_bytes",
    "safetensors_header_oversized",
    "safetensors_header_not_json",
    "safetensors_tiny",
    "bin_garbage",
    "bin_truncated_zip",
    "shard_missing",
    "bin_shard_missing",
    "index_not_json",
    "index_without_map",
    "incomplete_blob",
    "dangling_blob",
    "only_incomplete_no_snapshot",
    "empty_repo",
    "symlink_escape_file",
    "symlink_escape_relative",
    "symlink_escape_dir",
    "generation_config_broken",
]


@pytest.mark.parametrize("how", BROKEN)
def test_broken_model_is_refused_with_its_code(hf_cache, how):
    code, fragment = _break(hf_cache, how)
    res = resolve("org/model", cache_dir=hf_cache)
    assert not res.valid
    assert code in codes(res.errors), res.errors
    [problem] = [p for p in res.errors if p.code == code][:1]
    assert fragment in problem.message, problem.message
    if code.startswith(("model_format", "tokenizer_", "weights_", "shard_")):
        assert problem.message.startswith("Model format invalid:")
        assert "hf download org/model" in problem.hint


@pytest.mark.parametrize("how", BROKEN)
def test_listing_agrees_that_broken_models_are_invalid(hf_cache, how):
    from models_registry.listing import list_models

    _break(hf_cache, how)
    make_model_repo(hf_cache, "org/healthy")
    listed = {m.model_name: m for m in list_models(hf_cache)}
    assert listed["org/healthy"].valid, "one broken repo must never hide or spoil another"
    # The listing is a quick check (names and config.json only): weights' contents are left to validate-model.
    deep_only = how.startswith(
        (
            "safetensors_",
            "bin_",
            "tokenizer_json",
            "tokenizer_config",
            "tokenizer_model",
            "symlink_escape_relative",
            "symlink_escape_dir",
            "dangling_blob",
            "generation_config",
        )
    )
    if not deep_only:
        assert not listed["org/model"].valid, how


def test_unsafe_symlink_is_never_read(hf_cache):
    _break(hf_cache, "symlink_escape_file")
    res = resolve("org/model", cache_dir=hf_cache)
    # The escaping config.json was not parsed: no model_type warning or JSON verdict comes from it.
    assert "config_missing_model_type" not in codes(res.warnings)
    assert not any("config.json is not valid JSON" in p.message for p in res.errors)


@pytest.mark.parametrize(
    "what, expected",
    [
        ("no_weights", "no_weights"),
        ("no_generation_config", "no_generation_config"),
        ("no_model_type", "config_missing_model_type"),
    ],
)
def test_warnings_keep_the_model_valid(hf_cache, what, expected):
    make_model_repo(
        hf_cache,
        "org/model",
        weights=what != "no_weights",
        generation_config=what != "no_generation_config",
        config={"hidden_size": 4} if what == "no_model_type" else None,
    )
    res = resolve("org/model", cache_dir=hf_cache)
    assert res.valid, res.errors
    assert codes(res.warnings) == [expected]


def test_legacy_pickle_bin_is_accepted(hf_cache):
    import io

    import torch

    legacy = io.BytesIO()  # torch.save's pre-1.6 format: pickles, then raw storage bytes (no zip)
    torch.save({"w": torch.zeros(2, 2)}, legacy, _use_new_zipfile_serialization=False)
    make_model_repo(hf_cache, "org/model", weights=False)
    add_file(hf_cache, "org/model", "pytorch_model.bin", legacy.getvalue())
    assert resolve("org/model", cache_dir=hf_cache).valid


def test_sharded_model_with_all_shards_is_valid(hf_cache):
    make_model_repo(hf_cache, "org/model", weights=False)
    first = {k: v for k, v in SMALL_TENSORS.items() if k != "lm_head.weight"}
    add_file(hf_cache, "org/model", "model-00001-of-00002.safetensors", make_safetensors(first))
    add_file(hf_cache, "org/model", "model-00002-of-00002.safetensors", make_safetensors({"lm_head.weight": (8, 4)}))
    index = {"weight_map": {k: "model-00001-of-00002.safetensors" for k in first}}
    index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors"
    add_file(hf_cache, "org/model", "model.safetensors.index.json", index)
    res = resolve("org/model", cache_dir=hf_cache)
    assert res.valid, res.errors


def test_blob_store_shared_between_snapshots_is_fine(hf_cache):
    make_model_repo(hf_cache, "org/model", COMMIT_A)
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False)
    blobs = os.listdir(hf_cache / "models--org--model" / "blobs")
    assert len(blobs) == 5  # identical files share one blob
    assert resolve("org/model", COMMIT_B, cache_dir=hf_cache).valid


def test_folder_check_on_a_plain_directory(copy_of_tiny_llama):
    report = check_model_folder(copy_of_tiny_llama)
    assert report.valid and not any(f.symlink for f in report.files)
    (copy_of_tiny_llama / "tokenizer.json").unlink()
    (copy_of_tiny_llama / "tokenizer_config.json").unlink()
    assert codes(check_model_folder(copy_of_tiny_llama).errors) == ["tokenizer_missing"]


def test_incomplete_file_in_override_folder(copy_of_tiny_llama):
    (copy_of_tiny_llama / "model.safetensors.incomplete").write_bytes(b"x")
    assert "download_incomplete" in codes(check_model_folder(copy_of_tiny_llama).errors)


# --- names -----------------------------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "",
    " ",
    "../../etc/passwd",
    "/etc/passwd",
    "~/models/x",
    "a/b/c",
    "a--b/c",
    "org/a..b",
    "org/" + "x" * 97,
    "x" * 97,
    "org/na\x00me",
    "org/name\n",
    "org\\name",
    "C:\\models\\x",
    "./x",
    "org/.hidden",
    "org/name.git",
    "org/ná me",
    "org/-x",
    "org/x-",
    "%2e%2e/x",
    "org/na me",
    "models--org--name",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_refused_before_the_disk(name, tmp_path):
    cache = tmp_path / "cache"  # does not exist: a name that got past the check would report model_not_found
    res = resolve(name, cache_dir=cache)
    assert codes(res.errors) == ["invalid_model_name"], name
    assert res.searched == []
    assert "\x00" not in res.errors[0].message


def test_non_string_name_refused():
    assert codes(resolve(None, cache_dir=Path("/nonexistent")).errors) == ["invalid_model_name"]  # type: ignore[arg-type]


_repo_chars = string.ascii_letters + string.digits + "-_."


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=120))
def test_any_text_either_valid_name_or_refused_without_touching_disk(text):
    res = resolve(text, cache_dir=Path("/nonexistent-cache-for-hypothesis"))
    if name_error(text) is None:
        assert codes(res.errors) == ["model_not_found"]
        assert res.searched and ".." not in res.searched[0] and "\x00" not in res.searched[0]
        folder = res.searched[0].split(": ", 1)[1]
        assert Path(folder).parent == Path("/nonexistent-cache-for-hypothesis")
    else:
        assert codes(res.errors) == ["invalid_model_name"]


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    org=st.text(alphabet=_repo_chars, min_size=1, max_size=20),
    model=st.text(alphabet=_repo_chars, min_size=1, max_size=40),
)
def test_valid_names_map_to_their_own_cache_folder(org, model):
    name = f"{org}/{model}"
    if name_error(name) is not None:
        return
    folder = repo_folder_name(name)
    assert folder == f"models--{org}--{model}"
    assert "/" not in folder


# --- cache location ---------------------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path):
    env = {
        "HF_HUB_CACHE": "/a",
        "HUGGINGFACE_HUB_CACHE": "/b",
        "HF_HOME": "/c",
        "XDG_CACHE_HOME": "/d",
        "HOME": str(tmp_path),
    }
    assert hf_cache_dir("/setting", env) == (Path("/setting"), "Model Cache Path setting")
    assert hf_cache_dir("", env)[0] == Path("/a")
    del env["HF_HUB_CACHE"]
    assert hf_cache_dir("", env)[0] == Path("/b")
    del env["HUGGINGFACE_HUB_CACHE"]
    assert hf_cache_dir("", env)[0] == Path("/c/hub")
    del env["HF_HOME"]
    assert hf_cache_dir("", env)[0] == Path("/d/huggingface/hub")
    del env["XDG_CACHE_HOME"]
    assert hf_cache_dir("", env)[0] == Path("~/.cache/huggingface/hub").expanduser()


def test_blob_helper_writes_content_addressed(tmp_path):
    blob = write_blob(tmp_path, b"abc")
    assert blob.name == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_broken_pr_revision_is_fetched_again_by_its_revision(hf_cache):
    make_model_repo(hf_cache, "org/model")
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False, tokenizer=False)
    set_ref(hf_cache, "org/model", COMMIT_B, ref="refs/pr/4")
    res = resolve("org/model", "refs/pr/4", cache_dir=hf_cache)
    assert codes(res.errors) == ["tokenizer_missing"]
    assert "hf download org/model --revision refs/pr/4" in res.errors[0].hint
    assert "huggingface-cli download org/model --revision refs/pr/4" in res.errors[0].hint
