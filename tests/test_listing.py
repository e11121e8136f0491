"""The model listing: every cached repo and override, each with its validity; refreshed when the cache changes."""

from __future__ import annotations

import os
import shutil

import pytest

from models_registry.listing import list_cached, list_models
from tests.hfcache import COMMIT_A, COMMIT_B, add_file, make_model_repo


def by_name(items):
    return {m.model_name: m for m in items}


def test_lists_every_repo_with_validity(hf_cache, tiny_llama_in_cache):
    make_model_repo(hf_cache, "org/no-tokenizer", tokenizer=False)
    make_model_repo(hf_cache, "org/no-weights", weights=False)
    (hf_cache / "models--org--empty").mkdir()
    (hf_cache / "not-a-model-folder").mkdir()
    (hf_cache / "datasets--org--data").mkdir()
    listed = by_name(list_cached(hf_cache))
    assert set(listed) == {tiny_llama_in_cache[0], "org/no-tokenizer", "org/no-weights", "org/empty"}
    assert listed[tiny_llama_in_cache[0]].valid
    assert listed[tiny_llama_in_cache[0]].revision == tiny_llama_in_cache[1].name
    assert [p.code for p in listed["org/no-tokenizer"].errors] == ["tokenizer_missing"]
    assert listed["org/no-weights"].valid and [p.code for p in listed["org/no-weights"].warnings] == ["no_weights"]
    assert [p.code for p in listed["org/empty"].errors] == ["model_not_found"]


def test_the_json_has_the_contract_keys(hf_cache):
    make_model_repo(hf_cache, "org/m")
    [item] = list_cached(hf_cache)
    keys = {"model_name", "source", "path", "revision", "valid", "errors", "warnings", "deep"}
    assert set(item.model_dump(mode="json")) == keys and item.deep is None


def test_listing_refreshes_when_the_cache_changes(hf_cache):
    make_model_repo(hf_cache, "org/a")
    assert set(by_name(list_cached(hf_cache))) == {"org/a"}
    make_model_repo(hf_cache, "org/b")
    assert set(by_name(list_cached(hf_cache))) == {"org/a", "org/b"}
    # A file removed from a snapshot (the snapshot folder's mtime moves) is noticed.
    snap = hf_cache / "models--org--a" / "snapshots" / COMMIT_A
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (snap / f).unlink()
    assert not by_name(list_cached(hf_cache))["org/a"].valid
    # An interrupted download (a new blob) is noticed: of another file than the snapshot's, it is a warning.
    (hf_cache / "models--org--b" / "blobs" / ("0" * 64 + ".incomplete")).write_bytes(b"")
    assert [p.code for p in by_name(list_cached(hf_cache))["org/b"].warnings] == ["stale_partial_download"]
    # The snapshot's own weights interrupted (their link not made yet): an error.
    snap_b = hf_cache / "models--org--b" / "snapshots" / COMMIT_A
    (snap_b / "model.safetensors").unlink()
    assert [p.code for p in by_name(list_cached(hf_cache))["org/b"].errors] == ["download_incomplete"]
    shutil.rmtree(hf_cache / "models--org--b")
    assert set(by_name(list_cached(hf_cache))) == {"org/a"}


def test_warm_listing_reuses_results(hf_cache):
    make_model_repo(hf_cache, "org/a")
    first = list_cached(hf_cache)
    second = list_cached(hf_cache)
    assert first[0] is second[0]


def test_overrides_are_listed_and_answer_for_their_name(hf_cache, copy_of_tiny_llama, tmp_path):
    make_model_repo(hf_cache, "org/a", tokenizer=False)
    listed = by_name(
        list_models(hf_cache, [("org/a", str(copy_of_tiny_llama), False), ("org/gone", str(tmp_path / "x"), False)])
    )
    assert listed["org/a"].source == "override" and listed["org/a"].valid
    assert listed["org/gone"].source == "override" and not listed["org/gone"].valid


def test_missing_cache_dir_lists_nothing(tmp_path):
    assert list_cached(tmp_path / "missing") == []


def test_unreadable_name_folder_is_reported_not_hidden(hf_cache):
    make_model_repo(hf_cache, "org/good")
    os.mkdir(hf_cache / "models--bad..name")
    listed = by_name(list_cached(hf_cache))
    assert listed["org/good"].valid
    assert [p.code for p in listed["bad..name"].errors] == ["invalid_model_name"]


def test_persisted_listing_starts_a_new_process_warm_and_stays_correct(hf_cache, tmp_path):
    from models_registry.listing import forget

    store = tmp_path / "listing.json"
    make_model_repo(hf_cache, "org/a")
    make_model_repo(hf_cache, "org/b", tokenizer=False)
    first = by_name(list_cached(hf_cache, store))
    assert store.exists()
    forget()  # as if a new process started
    again = by_name(list_cached(hf_cache, store))
    assert {k: (v.valid, v.revision, [p.code for p in v.errors]) for k, v in again.items()} == {
        k: (v.valid, v.revision, [p.code for p in v.errors]) for k, v in first.items()
    }
    # A change made while no process was watching is still seen: signatures are checked on load.
    forget()
    snap = hf_cache / "models--org--a" / "snapshots" / COMMIT_A
    (snap / "config.json").unlink()
    assert [p.code for p in by_name(list_cached(hf_cache, store))["org/a"].errors] == ["model_format_invalid"]


def test_corrupt_store_is_ignored(hf_cache, tmp_path):
    from models_registry.listing import forget

    store = tmp_path / "listing.json"
    store.write_text("{not json")
    make_model_repo(hf_cache, "org/a")
    forget()
    assert by_name(list_cached(hf_cache, store))["org/a"].valid


@pytest.mark.parametrize("new_process", [False, True], ids=["same-process", "new-process-with-store"])
def test_every_kind_of_repo_change_is_seen_by_the_next_listing(hf_cache, tmp_path, new_process):
    """A repo's result is reused while refs/main, blobs/ and the chosen snapshot keep their mtimes (and snapshots/,
    when refs/main chose no snapshot): each change a download or a hand makes moves one of them."""
    from models_registry.listing import forget

    store = tmp_path / "listing.json"

    def listed():
        if new_process:
            forget()
        return by_name(list_cached(hf_cache, store))["org/a"]

    repo = hf_cache / "models--org--a"
    snap = make_model_repo(hf_cache, "org/a", generation_config=False)
    assert [p.code for p in listed().warnings] == ["no_generation_config"]
    add_file(hf_cache, "org/a", "generation_config.json", {"max_new_tokens": 8})  # a new file
    assert listed().valid and listed().warnings == []
    (snap / "config.json").unlink()  # a removed file
    assert [p.code for p in listed().errors] == ["model_format_invalid"]
    make_model_repo(hf_cache, "org/a", COMMIT_B)  # a new ref, to a complete snapshot whose blobs are all there
    assert listed().valid and listed().revision == COMMIT_B
    (repo / "blobs" / ("0" * 64 + ".incomplete")).write_bytes(b"")  # an interrupted download appears
    assert [p.code for p in listed().warnings] == ["stale_partial_download"]
    (repo / "refs" / "main").unlink()  # no ref, two snapshots: nothing to choose
    assert [p.code for p in listed().errors] == ["revision_not_found"]
    shutil.rmtree(repo / "snapshots" / COMMIT_A)  # one snapshot left: used, with a warning
    item = listed()
    assert item.valid and item.revision == COMMIT_B
    assert [p.code for p in item.warnings] == ["ref_main_unusable", "stale_partial_download"]
