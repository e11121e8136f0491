"""A member with a shell fills one folder with more files than a model's folder may hold and links many cache repos'
snapshots to it. The model list refuses each of them after a bounded listing, with the problem the model page gives;
transformers is never asked about such a folder; the page says the chat template was not read. The limit is set small
here (MTM_MODEL_FOLDER_MAX_ENTRIES); real HF cache layouts on tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from models_registry.deep_listing import with_deep_states
from models_registry.deep_state import judgeable_only
from models_registry.deep_verdict import compute_verdict
from models_registry.listing import forget, list_cached
from models_registry.names import repo_folder_name
from models_registry.resolution import resolve
from tests.api_client import make_user_token
from tests.clients import secure_client
from tests.hfcache import COMMIT_A, make_model_repo, set_ref

LIMIT = 20
LINKED = ("bob/m1", "bob/m2", "bob/m3")


@pytest.fixture
def small_limit(settings) -> int:
    settings.MTM_MODEL_FOLDER_MAX_ENTRIES = LIMIT
    return LIMIT


def planted_folder(where: Path, files: int = LIMIT + 10) -> Path:
    """A folder that looks like a model at its top (config.json, tokenizer.json) and holds `files` more files."""
    where.mkdir()
    (where / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (where / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    for n in range(files):
        (where / f"f{n}").touch()
    return where


def link_repo(cache: Path, name: str, target: Path) -> Path:
    """A repo whose refs/main names a commit and whose snapshots/<commit> is a link to `target` (inside the cache: a
    snapshot linked out of it is refused unread, tests/test_hostile_listing.py)."""
    snapshots = cache / repo_folder_name(name) / "snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / COMMIT_A).symlink_to(target)
    set_ref(cache, name, COMMIT_A)
    return snapshots / COMMIT_A


def too_large_problem(item, folder):
    [problem] = item.errors
    assert problem.code == "model_format_invalid"
    assert problem.message.startswith(f"Model format invalid: {folder} holds more than {LIMIT} files and folders")
    assert "MTM_MODEL_FOLDER_MAX_ENTRIES" in problem.hint and "hf download" not in problem.hint
    return problem


def test_repos_linked_to_one_wide_folder_list_as_too_large_and_the_others_stay_valid(hf_cache, tmp_path, small_limit):
    big = planted_folder(hf_cache / "big")
    snapshots = {name: link_repo(hf_cache, name, big) for name in LINKED}
    make_model_repo(hf_cache, "alice/good")
    make_model_repo(hf_cache, "carol/good")
    forget()
    listed = {m.model_name: m for m in list_cached(hf_cache)}
    assert listed["alice/good"].valid and listed["carol/good"].valid
    for name, snapshot in snapshots.items():
        problem = too_large_problem(listed[name], snapshot)
        assert problem == resolve(name, cache_dir=hf_cache).errors[0]  # the list says what the page says
        assert listed[name].path == str(snapshot)
    (big / "f0").unlink()  # still too large: the kept verdicts are checked again and stay refused
    forget()
    assert not any(m.valid for m in list_cached(hf_cache) if m.model_name in LINKED)


def test_a_wide_blobs_or_snapshots_folder_is_refused_by_the_list_and_the_page_alike(hf_cache, small_limit):
    make_model_repo(hf_cache, "bob/blobs")
    blobs = hf_cache / repo_folder_name("bob/blobs") / "blobs"
    for n in range(LIMIT + 1):
        (blobs / f"{n:064x}.incomplete").touch()
    for name, ref in (("bob/snapshots", False), ("bob/with-ref", True)):
        make_model_repo(hf_cache, name, ref=ref)
        for n in range(LIMIT):
            (hf_cache / repo_folder_name(name) / "snapshots" / f"{n:040x}").mkdir()
    forget()
    listed = {m.model_name: m for m in list_cached(hf_cache)}
    snapshots = hf_cache / repo_folder_name("bob/snapshots") / "snapshots"
    for name, folder in (("bob/blobs", blobs), ("bob/snapshots", snapshots)):
        problem = too_large_problem(listed[name], folder)
        assert [problem] == resolve(name, cache_dir=hf_cache).errors
    # refs/main names its snapshot: neither the list nor the page needs the rest of snapshots/
    assert listed["bob/with-ref"].valid and resolve("bob/with-ref", cache_dir=hf_cache).valid


def test_transformers_is_never_asked_about_a_folder_refused_for_its_size(hf_cache, tmp_path, small_limit, db):
    big = planted_folder(hf_cache / "big")
    snapshot = link_repo(hf_cache, "bob/m1", big)
    forget()
    [item] = list_cached(hf_cache)
    assert not judgeable_only(item)
    assert with_deep_states([item])[0].deep is None  # no deep state: the list never asks a worker
    assert not judgeable_only(resolve("bob/m1", cache_dir=hf_cache))
    verdict = compute_verdict(snapshot, model_name="bob/m1")  # a worker asked all the same refuses it unread
    assert not verdict.valid and verdict.errors[0] == item.errors[0]
    assert verdict.facts == {}


def test_the_model_page_says_the_chat_template_was_not_read(hf_cache, tmp_path, small_limit, db):
    link_repo(hf_cache, "bob/m1", planted_folder(hf_cache / "big"))
    user, _ = make_user_token("alice")
    page = secure_client(user).get(reverse("registry:model-detail", kwargs={"name": "bob/m1"}))
    html = page.content.decode()
    assert "not read: the portal read none of this folder" in html
    assert "none: to train on a" not in html
    assert f"holds more than {LIMIT} files and folders" in html and "MTM_MODEL_FOLDER_MAX_ENTRIES" in html
