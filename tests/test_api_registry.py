"""The registry's JSON API through the test client: validate-model, models/available, validate-output-dir,
model overrides and settings, with real cache layouts and the tiny Llama."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from models_registry.models import DEFAULT_UPLOAD_QUOTA_BYTES, ModelOverride, PortalSettings
from mtm.models import AuditEvent
from tests.api_client import call, codes, make_user_token
from tests.hfcache import COMMIT_B, make_model_repo, set_ref
from tests.unprivileged import call_unprivileged

pytestmark = pytest.mark.django_db

HOSTILE_NAMES = ["../../etc/passwd", "/abs", "a/b/c", "a--b", "a" * 97, "org/na\x00me", "", "~/model", "org/..x"]


@pytest.fixture
def member_token(db) -> str:
    return make_user_token("member")[1]


@pytest.fixture
def staff(db):
    return make_user_token("staff", staff=True)


@pytest.fixture
def staff_token(staff) -> str:
    return staff[1]


# --- validate-model -------------------------------------------------------------------------------------------


def test_tiny_llama_in_cache_is_valid(client, member_token, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    resp = call(client, "post", "/projects/validate-model", {"model_name": name}, member_token)
    assert resp.status_code == 200
    body = resp.json()
    assert body["valid"] is True, body["errors"]
    assert (body["model_name"], body["source"], body["path"]) == (name, "cache", str(snapshot))
    assert body["revision"] == snapshot.name and len(body["revision"]) == 40
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= set(body["files"])
    assert body["errors"] == []


def test_explicit_revision_and_unknown_branch(client, member_token, hf_cache):
    make_model_repo(hf_cache, "org/model")
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False)
    set_ref(hf_cache, "org/model", COMMIT_B, ref="dev")
    resp = call(
        client, "post", "/projects/validate-model", {"model_name": "org/model", "revision": "dev"}, member_token
    )
    assert resp.status_code == 200 and resp.json()["revision"] == COMMIT_B
    resp = call(client, "post", "/projects/validate-model", {"model_name": "org/model", "revision": "v9"}, member_token)
    assert resp.status_code == 200
    assert resp.json()["valid"] is False and codes(resp.json()["errors"]) == ["revision_not_found"]


def test_missing_model_is_200_with_model_not_found(client, member_token, hf_cache):
    name = "meta-llama/Llama-3.2-3B-Instruct"
    resp = call(client, "post", "/projects/validate-model", {"model_name": name}, member_token)
    assert resp.status_code == 200
    body = resp.json()
    assert body["valid"] is False and body["source"] is None and body["path"] is None
    [error] = body["errors"]
    assert error["code"] == "model_not_found"
    assert error["message"].startswith(f"Model '{name}' not found. Please ensure the model is downloaded")
    assert f"hf download {name}" in error["hint"]


def test_broken_models_report_their_problem(client, member_token, hf_cache):
    make_model_repo(hf_cache, "org/no-tokenizer", tokenizer=False)
    (hf_cache / "models--org--no-config" / "snapshots" / COMMIT_B).mkdir(parents=True)
    set_ref(hf_cache, "org/no-config", COMMIT_B)
    for name, code in [("org/no-tokenizer", "tokenizer_missing"), ("org/no-config", "model_format_invalid")]:
        body = call(client, "post", "/projects/validate-model", {"model_name": name}, member_token).json()
        assert body["valid"] is False and body["source"] == "cache"
        assert code in codes(body["errors"]), body["errors"]
        assert all(e["hint"] for e in body["errors"])
    assert body["errors"][0]["message"].startswith("Model format invalid: missing config.json")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_invalid_names_are_422_invalid_model_name(client, member_token, hf_cache, name):
    resp = call(client, "post", "/projects/validate-model", {"model_name": name}, member_token)
    assert resp.status_code == 422
    body = resp.json()
    assert codes(body["errors"]) == ["invalid_model_name"]
    assert body["detail"] == body["errors"][0]["message"] and body["errors"][0]["hint"]


def test_invalid_revision_is_422(client, member_token, hf_cache):
    body = {"model_name": "org/model", "revision": "../../etc"}
    resp = call(client, "post", "/projects/validate-model", body, member_token)
    assert resp.status_code == 422 and codes(resp.json()["errors"]) == ["invalid_revision"]


def test_enabled_override_answers_and_disabled_one_is_ignored(client, member_token, hf_cache, copy_of_tiny_llama):
    override = ModelOverride.objects.create(model_name="org/local", path=str(copy_of_tiny_llama))
    resp = call(client, "post", "/projects/validate-model", {"model_name": "org/local"}, member_token)
    body = resp.json()
    assert (body["valid"], body["source"], body["path"]) == (True, "override", str(copy_of_tiny_llama))
    override.enabled = False
    override.save()
    body = call(client, "post", "/projects/validate-model", {"model_name": "org/local"}, member_token).json()
    assert body["valid"] is False and codes(body["errors"]) == ["model_not_found"]


# --- models/available -----------------------------------------------------------------------------------------


def test_available_models_with_filters(client, member_token, tiny_llama_in_cache, hf_cache):
    name, snapshot = tiny_llama_in_cache
    make_model_repo(hf_cache, "other/broken", tokenizer=False)
    body = call(client, "get", "/projects/models/available", token=member_token).json()
    assert body["cache_dir"] == str(hf_cache) and body["count"] == 2
    by_name = {m["model_name"]: m for m in body["models"]}
    assert by_name[name]["valid"] is True and by_name[name]["revision"] == snapshot.name
    assert by_name["other/broken"]["valid"] is False and by_name["other/broken"]["errors"]
    assert set(by_name[name]) == {"model_name", "source", "path", "revision", "valid", "errors", "warnings", "deep"}

    def names(query: str) -> list[str]:
        resp = call(client, "get", f"/projects/models/available?{query}", token=member_token)
        assert resp.status_code == 200 and resp.json()["count"] == len(resp.json()["models"])
        return [m["model_name"] for m in resp.json()["models"]]

    assert names("q=TINY") == [name]
    assert names("valid=true") == [name]
    assert names("valid=false") == ["other/broken"]
    assert names("q=nothing-like-this") == []
    resp = call(client, "get", "/projects/models/available?valid=maybe", token=member_token)
    assert resp.status_code == 422 and "query.valid" in resp.json()["errors"][0]["message"]


# --- validate-output-dir --------------------------------------------------------------------------------------


@pytest.fixture
def output_root(tmp_path, settings):
    root = tmp_path / "outputs"
    root.mkdir()
    settings.MTM_OUTPUT_ROOTS = [str(root)]
    settings.MTM_LOW_DISK_BYTES = 0
    return root


def check_dir(client, token, path) -> dict:
    resp = call(client, "post", "/projects/validate-output-dir", {"output_directory": str(path)}, token)
    assert resp.status_code == 200
    return resp.json()


def test_output_dir_cases(client, member_token, output_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (output_root / "escape").symlink_to(outside)
    (output_root / "a-file").write_text("x")
    (output_root / "busy").mkdir()
    (output_root / "busy" / "old.txt").write_text("x")

    assert codes(check_dir(client, member_token, "relative/dir")["errors"]) == ["not_absolute"]
    assert codes(check_dir(client, member_token, outside / "run")["errors"]) == ["outside_allowed_roots"]
    escaped = check_dir(client, member_token, output_root / "escape" / "run")
    assert codes(escaped["errors"]) == ["outside_allowed_roots"] and str(outside) in escaped["errors"][0]["message"]
    assert codes(check_dir(client, member_token, output_root / "a-file")["errors"]) == ["not_a_directory"]

    busy = check_dir(client, member_token, output_root / "busy")
    assert busy["valid"] is True and busy["empty"] is False and codes(busy["warnings"]) == ["not_empty"]
    assert "Nothing in it is overwritten" in busy["warnings"][0]["hint"]  # each run makes a run-<id> folder inside

    fresh = check_dir(client, member_token, output_root / "new" / "run")
    assert (fresh["valid"], fresh["exists"], fresh["will_create"], fresh["writable"]) == (True, False, True, True)
    assert fresh["path"] == str(output_root / "new" / "run") and fresh["free_bytes"] > 0
    assert set(fresh) == {
        "output_directory", "path", "valid", "exists", "writable", "empty", "will_create", "free_bytes",
        "errors", "warnings",
    }  # fmt: skip


def test_low_disk_space_is_a_warning(client, member_token, output_root, settings):
    settings.MTM_LOW_DISK_BYTES = 2**62
    body = check_dir(client, member_token, output_root / "run")  # the root itself is no project's folder
    assert body["valid"] is True and codes(body["warnings"]) == ["low_disk_space"]


def test_output_roots_from_portal_settings_win(client, member_token, output_root, tmp_path):
    other = tmp_path / "other-root"
    other.mkdir()
    row = PortalSettings.load()
    row.allowed_output_roots = [str(other)]
    row.save()
    assert codes(check_dir(client, member_token, output_root / "run")["errors"]) == ["outside_allowed_roots"]
    assert check_dir(client, member_token, other / "run")["valid"] is True


def test_read_only_directory_is_permission_denied(tmp_path):
    """Root ignores permission bits, so when the suite runs as root the check runs in a child that drops to
    uid/gid 65534 (nobody) first; a world-writable sibling proves the child can write where it may."""
    base = Path(tempfile.mkdtemp(prefix="mtm-perm-", dir="/tmp"))  # /tmp, not tmp_path: nobody must traverse it
    try:
        base.chmod(0o755)
        (base / "locked").mkdir(mode=0o555)
        (base / "locked").chmod(0o555)
        (base / "open").mkdir()
        (base / "open").chmod(0o777)
        paths = [str(base / "locked"), str(base / "locked" / "new-run"), str(base / "open")]
        results = _check_as_unprivileged(paths, [str(base)])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    locked, locked_child, open_dir = results
    for result, where in [(locked, base / "locked"), (locked_child, base / "locked")]:
        assert result["valid"] is False and codes(result["errors"]) == ["permission_denied"]
        assert result["errors"][0]["message"].startswith(f"Cannot write to directory {where}")
        assert f"ls -la {where}" in result["errors"][0]["hint"]
    assert locked_child["will_create"] is True and "cannot be created" in locked_child["errors"][0]["message"]
    assert open_dir["valid"] is True and open_dir["writable"] is True


def _check_as_unprivileged(paths: list[str], roots: list[str]) -> list[dict]:
    return [call_unprivileged("models_registry.outputs:check_output_dir", p, roots, 0) for p in paths]


# --- model overrides ------------------------------------------------------------------------------------------


def test_override_crud_as_staff_is_audited(client, staff, staff_token, hf_cache, copy_of_tiny_llama):
    user, _ = staff
    body = {"model_name": "org/local", "path": f" {copy_of_tiny_llama} ", "note": "our copy"}
    resp = call(client, "post", "/model-overrides", body, staff_token, REMOTE_ADDR="10.1.2.3")
    assert resp.status_code == 201
    created = resp.json()
    assert set(created) == {"id", "model_name", "path", "enabled", "trust_remote_code", "note", "validation"}
    assert (created["path"], created["enabled"], created["note"]) == (str(copy_of_tiny_llama), True, "our copy")
    assert created["validation"]["valid"] is True and created["validation"]["source"] == "override"
    row = ModelOverride.objects.get(pk=created["id"])
    assert row.created_by == user and row.updated_by == user
    event = AuditEvent.objects.get(action="model_override.create")
    assert (event.actor, event.via, event.remote_addr, event.object_id) == (user, "api", "10.1.2.3", str(row.pk))
    assert event.changes["path"] == [None, str(copy_of_tiny_llama)]

    oid = created["id"]
    assert [o["id"] for o in call(client, "get", "/model-overrides", token=staff_token).json()] == [oid]
    assert call(client, "get", f"/model-overrides/{oid}", token=staff_token).json() == created

    resp = call(client, "patch", f"/model-overrides/{oid}", {"enabled": False, "path": "/nowhere"}, staff_token)
    assert resp.status_code == 200
    patched = resp.json()
    assert (patched["enabled"], patched["path"], patched["note"]) == (False, "/nowhere", "our copy")
    assert codes(patched["validation"]["errors"]) == ["model_not_found"]  # checked although disabled
    event = AuditEvent.objects.get(action="model_override.update")
    assert event.changes == {"enabled": [True, False], "path": [str(copy_of_tiny_llama), "/nowhere"]}

    assert call(client, "delete", f"/model-overrides/{oid}", token=staff_token).status_code == 204
    assert not ModelOverride.objects.exists()
    assert AuditEvent.objects.get(action="model_override.delete").object_id == str(oid)
    resp = call(client, "get", f"/model-overrides/{oid}", token=staff_token)
    assert resp.status_code == 404 and codes(resp.json()["errors"]) == ["not_found"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model_name": "org/taken", "path": "/m2"}, 409, "override_exists"),
        ({"model_name": "../../etc/passwd", "path": "/m"}, 422, "invalid_model_name"),
        ({"model_name": "org/new", "path": "models/llama"}, 422, "not_absolute"),
        ({"model_name": "org/new", "path": "   "}, 422, "not_absolute"),
    ],
)
def test_override_create_refusals(client, staff_token, hf_cache, body, status, code):
    ModelOverride.objects.create(model_name="org/taken", path="/m")
    resp = call(client, "post", "/model-overrides", body, staff_token)
    assert resp.status_code == status and codes(resp.json()["errors"]) == [code]
    assert ModelOverride.objects.count() == 1 and not AuditEvent.objects.exists()


def test_override_patch_refusals_and_bad_ids(client, staff_token, hf_cache):
    first = ModelOverride.objects.create(model_name="org/one", path="/m1")
    ModelOverride.objects.create(model_name="org/two", path="/m2")
    resp = call(client, "patch", f"/model-overrides/{first.pk}", {"model_name": "org/two"}, staff_token)
    assert resp.status_code == 409 and codes(resp.json()["errors"]) == ["override_exists"]
    resp = call(client, "patch", f"/model-overrides/{first.pk}", {"model_name": "a--b"}, staff_token)
    assert resp.status_code == 422 and codes(resp.json()["errors"]) == ["invalid_model_name"]
    assert ModelOverride.objects.get(pk=first.pk).model_name == "org/one"
    for bad_id, status in [("999", 404), ("0", 404), ("-1", 404), ("9" * 30, 404), ("abc", 422)]:
        resp = call(client, "get", f"/model-overrides/{bad_id}", token=staff_token)
        assert resp.status_code == status, bad_id
        assert resp.json()["errors"][0]["code"] in {"not_found", "invalid_request"}


# --- settings -------------------------------------------------------------------------------------------------


def test_settings_get_and_staff_patch(client, staff, staff_token, hf_cache, settings, tmp_path):
    settings.MTM_OUTPUT_ROOTS = ["/env/outputs"]
    resp = call(client, "get", "/settings", token=staff_token)
    assert resp.json() == {
        "model_cache_path": "",
        "effective_cache_dir": str(hf_cache),
        "allowed_output_roots": ["/env/outputs"],
        "allowed_dataset_roots": list(settings.MTM_DATASET_ROOTS),
        "upload_quota_bytes": DEFAULT_UPLOAD_QUOTA_BYTES,
        "live_runs_per_member": settings.MTM_LIVE_RUNS_PER_MEMBER,
    }
    cache = tmp_path / "custom-hub"
    patch = {"model_cache_path": f" {cache} ", "allowed_output_roots": ["/data/out/", "/data/out", " /data/x/../y "]}
    resp = call(client, "patch", "/settings", patch, staff_token)
    assert resp.status_code == 200
    body = resp.json()
    assert body["model_cache_path"] == str(cache) and body["effective_cache_dir"] == str(cache)
    assert body["allowed_output_roots"] == ["/data/out", "/data/y"]
    row = PortalSettings.load()
    assert row.allowed_output_roots == ["/data/out", "/data/y"] and row.updated_by == staff[0]
    event = AuditEvent.objects.get(action="portal_settings.update")
    assert event.changes["model_cache_path"] == ["", str(cache)] and event.via == "api"

    resp = call(client, "patch", "/settings", {"model_cache_path": ""}, staff_token)
    assert resp.json()["effective_cache_dir"] == str(hf_cache)
    assert resp.json()["allowed_output_roots"] == ["/data/out", "/data/y"]  # left out, so kept


def test_settings_patch_refuses_relative_paths(client, staff_token, hf_cache):
    patch = {"model_cache_path": "cache/hub", "allowed_dataset_roots": ["/ok", "rel", ""]}
    resp = call(client, "patch", "/settings", patch, staff_token)
    assert resp.status_code == 422
    errors = resp.json()["errors"]
    assert codes(errors) == ["not_absolute"] * 3
    assert "allowed_dataset_roots[1] 'rel'" in errors[1]["message"] and "[2] is empty" in errors[2]["message"]
    assert PortalSettings.load().allowed_dataset_roots == [] and not AuditEvent.objects.exists()


# --- OpenAPI --------------------------------------------------------------------------------------------------


def test_openapi_lists_every_path(client):
    resp = client.get("/api/v1/openapi.json", secure=True)
    assert resp.status_code == 200
    paths = json.loads(resp.content)["paths"]
    expected = {
        "/api/v1/projects/validate-model": {"post"},
        "/api/v1/projects/models/available": {"get"},
        "/api/v1/projects/validate-output-dir": {"post"},
        "/api/v1/model-overrides": {"get", "post"},
        "/api/v1/model-overrides/{override_id}": {"get", "patch", "delete"},
        "/api/v1/settings": {"get", "patch"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    schemes = json.loads(resp.content)["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}


def test_validate_output_dir_keeps_its_operation_after_moving_to_the_projects_router(client):
    """The operation lives in projects/api.py now (the output-folder rule is the projects app's); its operationId,
    tag and bodies are those it had in the registry router, so clients generated from the schema still work."""
    schema = json.loads(client.get("/api/v1/openapi.json", secure=True).content)
    operation = schema["paths"]["/api/v1/projects/validate-output-dir"]["post"]
    assert operation["operationId"] == "models_registry_api_validate_output_dir"
    assert operation["tags"] == ["projects"]
    bodies = {
        code: answer["content"]["application/json"]["schema"]["$ref"] for code, answer in operation["responses"].items()
    }
    assert bodies == {
        "200": "#/components/schemas/OutputDirOut",
        **{code: "#/components/schemas/ErrorOut" for code in ("401", "403", "404", "409", "413", "422")},
    }
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == "#/components/schemas/ValidateOutputDirIn"
