"""A model entry the scan cannot read (an override at /proc, a snapshot link into /proc/1/cwd) is a problem of that
entry: the pages, the listing API and validate-model answer for everyone else. Real HF cache layouts on tmp_path."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import User

from models_registry.models import ModelOverride, PortalSettings
from models_registry.names import repo_folder_name
from models_registry.resolution import resolve
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.hfcache import COMMIT_A, make_model_repo

FORBIDDEN = "/proc/1/cwd"  # a link even root may not follow in a container: every stat through it is EACCES


@pytest.fixture(autouse=True)
def forbidden_link_raises():
    try:
        os.stat(FORBIDDEN + "/.")
    except PermissionError:
        return
    pytest.skip(f"{FORBIDDEN} is readable here, so it cannot stand for an entry that makes the scan raise")


@pytest.fixture
def portal(db, hf_cache):
    row = PortalSettings.load()
    row.model_cache_path = str(hf_cache)
    row.save()
    make_model_repo(hf_cache, "org/good")
    snapshots = hf_cache / repo_folder_name("org/trap") / "snapshots"
    snapshots.mkdir(parents=True)
    (snapshots / COMMIT_A).symlink_to(FORBIDDEN)
    (hf_cache / repo_folder_name("org/trap") / "refs").mkdir()
    (hf_cache / repo_folder_name("org/trap") / "refs" / "main").write_text(COMMIT_A)
    ModelOverride.objects.create(model_name="org/proc", path="/proc")
    ModelOverride.objects.create(model_name="org/cwd", path=FORBIDDEN + "/srv")
    return hf_cache


def test_resolving_an_unreadable_entry_is_its_own_problem(portal):
    for name, override in (("org/trap", None), ("org/cwd", FORBIDDEN + "/srv")):
        res = resolve(name, cache_dir=portal, override_path=override)
        [problem] = res.errors
        assert problem.code == "model_unreadable" and not res.valid, name
        assert f"Model '{name}' cannot be read: Permission denied" in problem.message and FORBIDDEN in problem.message


def test_pages_listing_and_validate_model_answer_for_everyone(portal):
    user, token = make_user_token("member")
    client = secure_client(user)
    assert client.get("/").status_code == 200
    models_page = client.get("/models/")
    assert models_page.status_code == 200 and "org/good" in models_page.content.decode()
    assert "cannot be read: Permission denied" in models_page.content.decode()
    listed = call(client, "get", "/projects/models/available", token=token)
    assert listed.status_code == 200, listed.content
    by_name = {m["model_name"]: m for m in listed.json()["models"]}
    assert by_name["org/good"]["valid"] is True
    for name in ("org/trap", "org/proc", "org/cwd"):
        assert by_name[name]["valid"] is False and by_name[name]["errors"], name
        answer = call(client, "post", "/projects/validate-model", {"model_name": name}, token)
        assert answer.status_code == 200, (name, answer.content)
        assert answer.json()["valid"] is False and answer.json()["errors"]
    detail = client.get("/models/org/trap/")
    assert detail.status_code == 200


def test_an_override_folder_that_is_not_a_model_is_refused_without_listing_it(tmp_path, hf_cache):
    folder = tmp_path / "home"
    for i in range(50):
        (folder / f"project-{i}" / "src").mkdir(parents=True)
        (folder / f"project-{i}" / "src" / "main.py").write_text("print()")
    (folder / "mounts").symlink_to(FORBIDDEN)  # walking the folder would hit this
    res = resolve("org/home", cache_dir=hf_cache, override_path=str(folder))
    assert [p.code for p in res.errors] == ["override_not_a_model"]
    assert res.files == []  # nothing was listed
    assert str(folder) in res.errors[0].message and "config.json" in res.errors[0].message
    proc = resolve("org/proc", cache_dir=hf_cache, override_path="/proc")
    assert [p.code for p in proc.errors] == ["override_not_a_model"] and proc.files == []


def test_a_file_link_into_proc_inside_a_snapshot_is_that_files_problem(hf_cache):
    snapshot = make_model_repo(hf_cache, "org/model")
    (snapshot / "notes.txt").symlink_to(FORBIDDEN + "/etc/hostname")
    res = resolve("org/model", cache_dir=hf_cache)
    assert not res.valid
    [problem] = [p for p in res.errors if "notes.txt" in p.message]
    assert problem.code == "unsafe_symlink"


def test_the_override_admin_lists_the_unreadable_override(portal):
    admin = secure_client(User.objects.create_user("admin", is_staff=True, is_superuser=True))
    changelist = admin.get("/admin/models_registry/modeloverride/")
    assert changelist.status_code == 200 and "org/cwd" in changelist.content.decode()


def test_a_refs_folder_linked_into_proc_lists_as_that_repos_problem(hf_cache):
    from models_registry.listing import list_cached

    make_model_repo(hf_cache, "org/good")
    repo = hf_cache / repo_folder_name("org/trap")
    make_model_repo(hf_cache, "org/trap", ref=False)
    make_model_repo(hf_cache, "org/trap", "b" * 40, ref=False)  # two snapshots and no refs/main: refs are listed
    (repo / "refs").symlink_to(FORBIDDEN)
    listed = {item.model_name: item for item in list_cached(hf_cache)}
    assert listed["org/good"].valid
    assert [p.code for p in listed["org/trap"].errors] == ["model_unreadable"]
