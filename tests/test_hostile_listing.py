"""A member who can write in the shared HF cache cannot make the model list (or a worker's report) slow for everyone:
repo folders that are links are refused unread, one cold listing reads a bounded number of entries, a worker's
heartbeat does not wait for its model listing, and a snapshot linked out of the cache is refused unread. Real cache
layouts on tmp_path."""

from __future__ import annotations

import json
import os
import pwd
import time

import pytest

from models_registry import listing
from models_registry.resolution import resolve
from tests.hfcache import COMMIT_A, make_model_repo


def test_repo_folders_linked_to_one_repo_are_refused_unread_and_the_repo_is_scanned_once(hf_cache):
    make_model_repo(hf_cache, "evil/base")
    for n in range(5):
        (hf_cache / f"models--evil--r{n}").symlink_to("models--evil--base")
    listing.forget(hf_cache)
    listed = {m.model_name: m for m in listing.list_cached(hf_cache)}
    assert listed["evil/base"].valid
    for n in range(5):
        [problem] = listed[f"evil/r{n}"].errors
        assert problem.code == "repo_folder_is_link"
        assert f"models--evil--r{n} in the Hugging Face cache is a link to models--evil--base, not a folder" in (
            problem.message
        )
        assert "rm " in problem.hint and f"hf download evil/r{n}" in problem.hint
        # The model page refuses it the same way, unread.
        page = resolve(f"evil/r{n}", cache_dir=hf_cache)
        assert [p.model_dump() for p in page.errors] == [problem.model_dump()] and not page.files
    assert set(listing._memo[os.path.abspath(hf_cache)]) == {"models--evil--base"}  # the only repo scanned


def test_a_listing_reads_at_most_its_budget_and_shows_the_rest_as_not_checked(hf_cache, settings):
    for name in ("org/a", "org/b", "org/c", "org/d"):
        make_model_repo(hf_cache, name)  # each: 5 snapshot files and 5 blobs
    settings.MTM_MODEL_LISTING_MAX_ENTRIES = 10
    listing.forget(hf_cache)
    listed = {m.model_name: m for m in listing.list_cached(hf_cache)}
    assert listed["org/a"].valid
    owner = pwd.getpwuid(os.getuid()).pw_name
    assert not {"org/b", "org/c", "org/d"} & set(listed)  # one row stands for them
    [problem] = listed[f"3 more repo folders of {owner}"].errors
    assert problem.code == "listing_not_checked"
    assert "models--org--b to models--org--d" in problem.message
    assert "one model listing reads at most 10 entries" in problem.message
    assert "MTM_MODEL_LISTING_MAX_ENTRIES" in problem.hint
    # A kept verdict still shown costs only a repo folder's fixed few entries: the next listing goes on.
    again = {m.model_name: m for m in listing.list_cached(hf_cache)}
    assert again["org/a"].valid and again["org/b"].valid
    assert [p.code for p in again[f"2 more repo folders of {owner}"].errors] == ["listing_not_checked"]


@pytest.mark.django_db
def test_a_workers_heartbeat_is_written_when_its_model_listing_is_over_budget_or_fails(portal_roots, settings):
    from workers.models import Worker
    from workers.reporting import Reporter, _parts, register_part

    cache = portal_roots / "hf-cache" / "hub"
    for name in ("org/a", "org/b", "org/c"):
        make_model_repo(cache, name)
    settings.MTM_MODEL_LISTING_MAX_ENTRIES = 10
    listing.forget()
    reporter = Reporter(app=None, name="alpha@h1", queues=["training"])
    reporter.probed, reporter.probed_at = {"devices": []}, time.monotonic()  # no device probe in a child
    reporter.report_once()
    row = Worker.objects.get(name="alpha@h1")
    assert not row.is_gone
    assert row.held_models == ["org/a"]  # the others were not checked in this report
    assert row.held_models_at is not None and row.held_models_at >= row.last_seen

    def listing_fails() -> dict:
        raise OSError("the cache's file server stopped answering")

    register_part(listing_fails)
    try:
        Worker.objects.filter(pk=row.pk).update(last_seen=row.last_seen.replace(year=2000))
        with pytest.raises(OSError):
            reporter.report_once()
    finally:
        _parts.remove(listing_fails)
    assert not Worker.objects.get(pk=row.pk).is_gone  # the heartbeat came first


def _own(repo, uid: int) -> None:
    """Make `uid` the owner of the repo folder and all in it, as a download by that user would."""
    os.chown(repo, uid, uid)
    for folder, subfolders, files in os.walk(repo):
        for name in subfolders + files:
            os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)


@pytest.mark.django_db
def test_one_owners_repos_spend_only_that_owners_budget(portal_roots, settings):
    from models_registry.worker_report import report_part

    cache = portal_roots / "hf-cache" / "hub"
    mallory, bob, alice = pwd.getpwnam("nobody").pw_uid, 4003, 4002  # bob: a uid with no user name
    for n in range(3):  # named to sort before everyone's
        _own(make_model_repo(cache, f"0aa/m{n}").parent.parent, mallory)
        _own(make_model_repo(cache, f"0bb/m{n}").parent.parent, bob)
    _own(make_model_repo(cache, "victim/old-model").parent.parent, alice)
    settings.MTM_MODEL_LISTING_MAX_ENTRIES = 10  # one repo's 5 snapshot files and 5 blobs
    listing.forget()

    listed = {m.model_name: m for m in listing.list_cached(cache)}
    assert listed["victim/old-model"].valid
    assert listed["0aa/m0"].valid and listed["0bb/m0"].valid
    for org, label in (("0aa", "nobody"), ("0bb", "uid 4003")):
        assert f"{org}/m1" not in listed and f"{org}/m2" not in listed
        [problem] = listed[f"2 more repo folders of {label}"].errors
        assert problem.code == "listing_not_checked"
        assert f"2 more repo folders owned by {label} in the Hugging Face cache" in problem.message
        assert f"models--{org}--m1 to models--{org}--m2" in problem.message
        assert "MTM_MODEL_LISTING_MAX_ENTRIES" in problem.hint and label in problem.hint
    assert report_part()["held_models"] == ["0aa/m0", "0aa/m1", "0bb/m0", "0bb/m1", "victim/old-model"]

    # Mallory's repos changing before every listing make them re-checked each time, at her budget's cost only:
    # another member's new download is checked at once.
    new = make_model_repo(cache, "victim/new-model").parent.parent
    _own(new, alice)
    for _ in range(2):
        for n in range(3):
            os.utime(cache / f"models--0aa--m{n}" / "snapshots" / COMMIT_A)
        again = {m.model_name: m for m in listing.list_cached(cache)}
        assert again["victim/new-model"].valid and again["victim/old-model"].valid
        assert "victim/new-model" in report_part()["held_models"]


def test_a_snapshot_linked_out_of_the_cache_is_refused_in_the_list_as_on_the_page(hf_cache, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    make_model_repo(elsewhere, "org/real")
    make_model_repo(hf_cache, "org/model")
    snapshot = hf_cache / "models--org--model" / "snapshots" / COMMIT_A
    for file in snapshot.iterdir():
        file.unlink()
    snapshot.rmdir()
    snapshot.symlink_to(elsewhere / "models--org--real" / "snapshots" / COMMIT_A)
    listing.forget(hf_cache)
    [item] = [m for m in listing.list_cached(hf_cache) if m.model_name == "org/model"]
    page = resolve("org/model", cache_dir=hf_cache)
    assert [p.model_dump() for p in item.errors] == [p.model_dump() for p in page.errors]
    [problem] = item.errors
    assert problem.code == "unsafe_symlink" and f"snapshots/{COMMIT_A} points to {elsewhere}" in problem.message


@pytest.mark.django_db
def test_one_owners_empty_repo_folders_are_one_row_and_leave_others_checked(team, hf_cache, settings, tmp_path):
    from models_registry.owner_budget import NOT_CHECKED, REPO_COST
    from tests.clients import secure_client

    mallory, alice = pwd.getpwnam("nobody").pw_uid, 4002
    for n in range(300):  # empty, named to sort before everyone's: each reads no entry at all
        folder = hf_cache / f"models--0--m{n:03d}"
        folder.mkdir()
        os.chown(folder, mallory, mallory)
    _own(make_model_repo(hf_cache, "victim/model").parent.parent, alice)
    settings.MTM_MODEL_LISTING_MAX_ENTRIES = 10 * REPO_COST
    store = tmp_path / "model-listing.json"
    listing.forget()

    for _ in range(2):  # cold, then warm: kept verdicts cost the same few entries
        listed = {m.model_name: m for m in listing.list_cached(hf_cache, store)}
        assert listed["victim/model"].valid
        floods = [name for name in listed if name.startswith("0/")]
        assert len(floods) == 10
        [summary] = [m for m in listed.values() if any(p.code == NOT_CHECKED for p in m.errors)]
        assert summary.model_name == "290 more repo folders of nobody"
        [problem] = summary.errors
        assert "models--0--m010 to models--0--m299" in problem.message
        assert "MTM_MODEL_LISTING_MAX_ENTRIES" in problem.message and "nobody" in problem.hint
        assert len(listed) == 12
    kept = json.loads(store.read_text())[os.path.abspath(hf_cache)]
    assert len([folder for folder in kept if folder.startswith("models--0--")]) == 10

    client = secure_client(team["alice"])
    page = client.get("/models/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "victim/model" in html and "290 more repo folders of nobody" in html
    assert 'href="/models/290' not in html
    api = client.get("/api/v1/projects/models/available").json()
    assert api["count"] == 12
    assert client.get("/").status_code == 200 and client.get("/projects/new/").status_code == 200


def test_an_owner_has_at_most_a_fixed_number_of_repo_folders_listed(hf_cache, settings):
    from models_registry.owner_budget import MAX_REPOS_PER_OWNER, NOT_CHECKED

    for n in range(MAX_REPOS_PER_OWNER + 5):
        (hf_cache / f"models--0--m{n:05d}").mkdir()
    settings.MTM_MODEL_LISTING_MAX_ENTRIES = 10**9
    listing.forget()
    listed = listing.list_cached(hf_cache)
    assert len(listed) == MAX_REPOS_PER_OWNER + 1
    [summary] = [m for m in listed if any(p.code == NOT_CHECKED for p in m.errors)]
    assert summary.model_name.startswith("5 more repo folders of ")
