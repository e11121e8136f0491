"""A ref file a member plants in the shared cache never makes the portal read, or show, another file.

refs/main (or refs/<branch>) planted as a link to a file the portal's user can read, or under a refs/ folder that is
a link, once had up to 4 KiB of that file quoted in the resolution's warning or error ("refs/main names <its
content>, which has no snapshot"), on the API, the model page and the model list: another member's upload, the
secret key, the web process's environment. A ref is read without following a link and used or named only when it
is a commit hash.
"""

from __future__ import annotations

import json

import pytest

from models_registry.listing import list_cached
from models_registry.resolution import resolve
from tests.api_client import call, make_user_token
from tests.hfcache import COMMIT_A, make_model_repo

SECRET = "alice-private-words"
HEX_SECRET = "c0ffee" * 6 + "c0de"  # 40 hex digits: a secret shaped like a commit hash


def plant(hf_cache, tmp_path, name: str, how: str) -> None:
    """A valid one-snapshot repo `name` whose refs/main is planted `how`."""
    make_model_repo(hf_cache, name, ref=False)
    refs = hf_cache / f"models--{name.replace('/', '--')}" / "refs"
    secret = tmp_path / "alice" / "upload.jsonl"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(json.dumps({"text": SECRET}) + "\n")
    (tmp_path / "alice" / "main").write_text(HEX_SECRET)
    if how == "ref is a link":
        refs.mkdir()
        (refs / "main").symlink_to(secret)
    elif how == "ref is a link to a commit-shaped secret":
        refs.mkdir()
        (refs / "main").symlink_to(tmp_path / "alice" / "main")
    elif how == "refs folder is a link":
        refs.symlink_to(tmp_path / "alice")
    elif how == "ref holds text":
        refs.mkdir()
        (refs / "main").write_text(SECRET)
    else:
        raise AssertionError(how)


def everything_said(res) -> str:
    return json.dumps([(p.message, p.hint) for p in res.errors + res.warnings] + [res.revision, res.path])


HOWS = ["ref is a link", "ref is a link to a commit-shaped secret", "refs folder is a link", "ref holds text"]


@pytest.mark.parametrize("how", HOWS)
def test_a_planted_ref_is_not_followed_or_quoted_by_the_resolver(hf_cache, tmp_path, how):
    plant(hf_cache, tmp_path, "mallory/leak", how)
    res = resolve("mallory/leak", cache_dir=hf_cache)
    said = everything_said(res)
    assert SECRET not in said and HEX_SECRET not in said
    # The only snapshot is still used, with the reason refs/main was not.
    assert res.valid and res.revision == COMMIT_A
    [warning] = res.warnings
    assert warning.code == "ref_main_unusable"
    expected = {
        "ref is a link": "refs/main is a link",
        "ref is a link to a commit-shaped secret": "refs/main is a link",
        "refs folder is a link": "refs/main is a link",
        "ref holds text": "refs/main does not hold a commit hash",
    }[how]
    assert warning.message.startswith(expected), warning.message


@pytest.mark.parametrize("how", HOWS)
def test_a_planted_ref_is_not_quoted_for_a_named_revision(hf_cache, tmp_path, how):
    plant(hf_cache, tmp_path, "mallory/leak", how)
    res = resolve("mallory/leak", "main", cache_dir=hf_cache)
    said = everything_said(res)
    assert not res.valid and [e.code for e in res.errors] == ["revision_not_found"]
    assert SECRET not in said and HEX_SECRET not in said


@pytest.mark.parametrize("how", HOWS)
def test_the_model_list_and_the_api_quote_nothing_of_a_planted_ref(client, db, hf_cache, tmp_path, how):
    plant(hf_cache, tmp_path, "mallory/leak", how)
    [listed] = [item for item in list_cached(hf_cache) if item.model_name == "mallory/leak"]
    assert listed.revision == COMMIT_A
    shown = json.dumps([(p.message, p.hint) for p in listed.errors + listed.warnings])
    assert SECRET not in shown and HEX_SECRET not in shown
    token = make_user_token("alice")[1]
    for revision in (None, "main"):
        body = {"model_name": "mallory/leak"} | ({"revision": revision} if revision else {})
        resp = call(client, "post", "/projects/validate-model", body, token)
        assert resp.status_code == 200
        assert SECRET not in resp.text and HEX_SECRET not in resp.text
    page = client.get("/models/mallory/leak/")
    assert SECRET not in page.content.decode() and HEX_SECRET not in page.content.decode()


def test_a_snapshots_folder_that_is_a_link_lists_nothing_behind_it(client, db, hf_cache, tmp_path):
    """snapshots/ made a link to another folder (the uploads' folder) had that folder's entries named as snapshots,
    and the files of its only subfolder listed as the model's files."""
    uploads = tmp_path / "media" / "datasets"
    (uploads / "ef82d1").mkdir(parents=True)
    (uploads / "ef82d1" / "alice-secret.jsonl").write_text(json.dumps({"text": SECRET}))
    make_model_repo(hf_cache, "mallory/names")
    repo = hf_cache / "models--mallory--names"
    (repo / "snapshots").rename(repo / "moved")
    (repo / "snapshots").symlink_to(uploads)
    for revision in (None, "main"):
        res = resolve("mallory/names", revision, cache_dir=hf_cache)
        said = everything_said(res) + json.dumps(res.files if hasattr(res, "files") else [])
        assert not res.valid and "ef82d1" not in said and "alice-secret" not in said
    [listed] = [item for item in list_cached(hf_cache) if item.model_name == "mallory/names"]
    assert "ef82d1" not in json.dumps([(p.message, p.hint) for p in listed.errors + listed.warnings])
    resp = call(client, "post", "/projects/validate-model", {"model_name": "mallory/names"}, make_user_token("a")[1])
    assert resp.status_code == 200 and "ef82d1" not in resp.text and "alice-secret" not in resp.text
