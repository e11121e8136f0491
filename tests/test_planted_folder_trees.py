"""A member with a shell plants a folder tree in the shared cache: 1,500 nested folders in a snapshot, in
.no_exist/<commit> or under refs/, or 30,000 files in a snapshot. Every door that checks a model (its page, the
field check, the verdict poll, validate-model, the list) answers with a clear problem, never a 500, and the walk
costs a bounded listing. Real HF cache layouts on tmp_path."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from models_registry.deep_verdict import fingerprint
from models_registry.listing import forget, list_cached
from models_registry.names import repo_folder_name
from models_registry.resolution import resolve
from mtm.request_limits import RETRY_AFTER_SECONDS, expensive_request
from mtm.shared.bounded_walk import MAX_DEPTH, MAX_ENTRIES, FolderTooLarge, walk
from tests.api_client import call, codes, make_user_token
from tests.clients import secure_client
from tests.hfcache import COMMIT_A, COMMIT_B, make_model_repo
from tests.planted_trees import nest_folders, remove_planted

PLANTED_DEPTH = 1_500  # past Python's recursion limit: os.walk raised RecursionError
PLANTED_FILES = 30_000


@pytest.fixture
def nest():
    """Make `depth` folders a/a/a/... under a folder, through descriptors (os.makedirs recurses too); removed after
    the test by GNU rm (shutil.rmtree, pytest's clean-up included, recurses as well)."""
    made: list[Path] = []

    def make(base: Path, depth: int = PLANTED_DEPTH) -> None:
        made.append(base)
        nest_folders(base, depth)

    yield make
    remove_planted([base / "a" for base in made])


def fill(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"f{i}").touch()


def repo(cache: Path, name: str) -> Path:
    return cache / repo_folder_name(name)


# --- the walk itself ----------------------------------------------------------------------------------------------


def test_the_walk_lists_an_ordinary_snapshot_as_os_walk_does(hf_cache, tmp_path):
    snapshot = make_model_repo(hf_cache, "org/plain")
    (snapshot / "onnx").mkdir()
    (snapshot / "onnx" / "model.onnx").write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret").write_text("s")
    (snapshot / "linked").symlink_to(tmp_path / "elsewhere")  # listed as a folder, never entered
    (snapshot / "dangling").symlink_to(tmp_path / "nothing")
    expected = [(p, sorted(d), sorted(f)) for p, d, f in os.walk(snapshot)]
    assert [(f.path, f.folders, f.others) for f in walk(snapshot)] == sorted(expected)


def test_the_walk_refuses_a_deep_or_wide_tree_without_recursing(tmp_path, nest):
    (tmp_path / "deep").mkdir()
    nest(tmp_path / "deep", MAX_DEPTH + 1)
    with pytest.raises(FolderTooLarge) as deep:
        walk(tmp_path / "deep")
    assert deep.value.kind == "depth" and deep.value.branch == "a" and isinstance(deep.value, OSError)
    assert f"nested more than {MAX_DEPTH} deep" in str(deep.value)
    fill(tmp_path / "wide" / "junk", MAX_ENTRIES + 1)
    with pytest.raises(FolderTooLarge) as wide:
        walk(tmp_path / "wide")
    assert wide.value.kind == "entries" and wide.value.branch == "junk"
    assert f"more than {MAX_ENTRIES} files and folders" in str(wide.value)


# --- the resolver and the fingerprint -----------------------------------------------------------------------------


def test_a_snapshot_with_1500_nested_folders_is_a_format_error_naming_what_to_remove(hf_cache, nest):
    snapshot = make_model_repo(hf_cache, "org/deep")
    nest(snapshot)
    res = resolve("org/deep", cache_dir=hf_cache)
    [problem] = res.errors
    assert problem.code == "model_format_invalid" and not res.valid
    assert problem.message.startswith(f"Model format invalid: {snapshot} has folders nested more than {MAX_DEPTH}")
    assert "The portal does not read a folder past this size" in problem.message
    assert f"rm -r {snapshot / 'a'}" in problem.hint and "hf download" not in problem.hint
    assert "ask staff to raise MTM_MODEL_FOLDER_MAX_DEPTH" in problem.hint
    assert fingerprint(snapshot) != fingerprint(make_model_repo(hf_cache, "org/other"))  # no RecursionError


def test_a_snapshot_with_30000_files_is_a_format_error_at_the_default_limit(hf_cache):
    snapshot = make_model_repo(hf_cache, "org/wide")
    fill(snapshot / "junk", PLANTED_FILES)
    [problem] = resolve("org/wide", cache_dir=hf_cache).errors
    assert problem.code == "model_format_invalid"
    assert f"{snapshot} holds more than {MAX_ENTRIES} files and folders" in problem.message
    assert f"rm -r {snapshot / 'junk'}" in problem.hint


def test_the_limits_are_settings(hf_cache, settings):
    snapshot = make_model_repo(hf_cache, "org/tuned")
    fill(snapshot / "extra", 20)
    assert resolve("org/tuned", cache_dir=hf_cache).valid
    settings.MTM_MODEL_FOLDER_MAX_ENTRIES = 20
    [problem] = resolve("org/tuned", cache_dir=hf_cache).errors
    assert "holds more than 20 files and folders" in problem.message
    settings.MTM_MODEL_FOLDER_MAX_ENTRIES = 1_000
    settings.MTM_MODEL_FOLDER_MAX_DEPTH = 0
    [problem] = resolve("org/tuned", cache_dir=hf_cache).errors
    assert "nested more than 0 deep" in problem.message and f"rm -r {snapshot / 'extra'}" in problem.hint


def test_the_listing_reports_a_deep_snapshot_with_a_partial_download_as_its_own_problem(hf_cache, nest):
    snapshot = make_model_repo(hf_cache, "org/partial")
    nest(snapshot)
    (repo(hf_cache, "org/partial") / "blobs" / ("0" * 64 + ".incomplete")).write_bytes(b"")
    make_model_repo(hf_cache, "org/good")
    forget()
    listed = {m.model_name: m for m in list_cached(hf_cache)}
    assert listed["org/good"].valid
    [problem] = listed["org/partial"].errors
    assert problem.code == "model_format_invalid" and f"nested more than {MAX_DEPTH} deep" in problem.message
    assert problem == resolve("org/partial", cache_dir=hf_cache).errors[0]  # the list says what the page says


# --- the doors ----------------------------------------------------------------------------------------------------


@pytest.fixture
def planted(hf_cache, nest):
    """Three models, each with a planted tree: in its snapshot, in .no_exist/<commit>, under refs/."""
    nest(make_model_repo(hf_cache, "org/deep"))
    make_model_repo(hf_cache, "org/absent")
    (repo(hf_cache, "org/absent") / ".no_exist" / COMMIT_A).mkdir(parents=True)
    nest(repo(hf_cache, "org/absent") / ".no_exist" / COMMIT_A)
    make_model_repo(hf_cache, "org/refs", COMMIT_A, ref=False)
    make_model_repo(hf_cache, "org/refs", COMMIT_B, ref=False)
    (repo(hf_cache, "org/refs") / "refs").mkdir()
    nest(repo(hf_cache, "org/refs") / "refs")
    return hf_cache


EXPECTED = {
    "org/deep": ("model_format_invalid", f"nested more than {MAX_DEPTH} deep"),
    "org/absent": (None, ""),
    "org/refs": (
        "revision_not_found",
        f"refs found: none listed (refs/ has folders nested more than {MAX_DEPTH} deep)",
    ),
}


def _poll(client, name: str, view: str, method: str = "get"):
    query = urlencode({"model_name": name, "revision": "", "view": view})
    return getattr(client, method)(f"{reverse('registry:verdict-status')}?{query}", HTTP_HX_REQUEST="true")


def test_every_door_answers_a_planted_tree_with_a_clear_problem(planted, db):
    user, token = make_user_token("mallory")
    client = secure_client(user)
    for name, (code, words) in EXPECTED.items():
        detail = client.get(reverse("registry:model-detail", kwargs={"name": name}))
        field = client.get(reverse("registry:validate-field"), {"model_name": name})
        polls = [_poll(client, name, view, method) for view in ("field", "page") for method in ("get", "post")]
        api = call(client, "post", "/projects/validate-model", {"model_name": name}, token)
        for response in (detail, field, *polls, api):
            assert response.status_code in (200, 286, 404), (name, response.status_code)
        assert api.status_code == 200
        body = api.json()
        if code is None:
            assert body["valid"] is True and detail.status_code == 200, body
            assert "valid" in field.content.decode()
            continue
        assert body["valid"] is False and codes(body["errors"]) == [code], body
        assert words in body["errors"][0]["message"]
        for response in (detail, field):
            assert words in response.content.decode(), name
    listed = call(client, "get", "/projects/models/available", token=token)
    assert listed.status_code == 200 and client.get(reverse("registry:models")).status_code == 200


def test_beyond_the_cap_the_model_pages_answer_429_saying_when_to_retry(hf_cache, db, settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    make_model_repo(hf_cache, "org/plain")
    make_model_repo(hf_cache, "org/other")
    user, _ = make_user_token("busy")
    client = secure_client(user)
    with expensive_request(user):
        detail = client.get(reverse("registry:model-detail", kwargs={"name": "org/plain"}))
        field = client.get(reverse("registry:validate-field"), {"model_name": "org/plain"}, HTTP_HX_REQUEST="true")
        polls = [_poll(client, "org/other", view, "post") for view in ("field", "page")]
    for response in (detail, field, *polls):
        assert response.status_code == 429 and response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    for response in (detail, field):
        assert f"Try again in {RETRY_AFTER_SECONDS} seconds" in response.content.decode()
    assert 'hx-trigger="every 2s"' in polls[0].content.decode()  # a busy poll keeps polling
    assert 'hx-trigger="every 2s"' in polls[1].content.decode()
    assert client.get(reverse("registry:model-detail", kwargs={"name": "org/plain"})).status_code == 200
