"""The registry's management commands: output for people, the API's JSON with --json, and exit codes
(0 valid, 1 invalid, 2 usage) checked on real `manage.py` processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from models_registry.lookup import resolve_model
from models_registry.models import ModelOverride
from mtm.models import ApiToken, AuditEvent, hash_token
from tests.api_client import call, codes
from tests.hfcache import COMMIT_B, make_model_repo, set_ref
from tests.workers import current_database_url


def run_command(*args: str) -> tuple[int, str]:
    """call_command, returning (exit status, stdout); invalid results leave through SystemExit(1)."""
    out = io.StringIO()
    try:
        call_command(*args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def manage(*args: str) -> subprocess.CompletedProcess:
    """A real `python manage.py ...` on this test's database and HF cache (callers need committed rows)."""
    env = {**os.environ, "DATABASE_URL": current_database_url()}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- resolve_model / validate_model ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_resolve_model_valid_for_people_and_as_json(tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    status, out = run_command("resolve_model", name)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"{name}: valid"
    assert lines[1:4] == ["  source:   cache", f"  path:     {snapshot}", f"  revision: {snapshot.name}"]
    assert "config.json" in out and "ERROR" not in out

    status, out = run_command("resolve_model", name, "--json")
    assert status == 0 and json.loads(out) == resolve_model(name).model_dump(mode="json")


@pytest.mark.django_db
def test_resolve_model_missing_prints_error_and_hint(hf_cache):
    status, out = run_command("resolve_model", "org/missing")
    assert status == 1
    assert "org/missing: INVALID" in out and "  source:   -" in out
    assert "ERROR [model_not_found] Model 'org/missing' not found. Please ensure the model is downloaded" in out
    assert "    hint: 1. Download it: hf download org/missing" in out


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b/c", "a--b", "x" * 97])
def test_invalid_name_is_invalid_not_usage(hf_cache, name):
    status, out = run_command("resolve_model", name, "--json")
    assert status == 1 and codes(json.loads(out)["errors"]) == ["invalid_model_name"]


@pytest.mark.django_db
def test_resolve_model_revision(hf_cache):
    make_model_repo(hf_cache, "org/model")
    status, out = run_command("resolve_model", "org/model", "--revision", "nope", "--json")
    assert status == 1 and codes(json.loads(out)["errors"]) == ["revision_not_found"]
    status, out = run_command("resolve_model", "org/model", "--revision", "main", "--json")
    assert status == 0 and json.loads(out)["revision"] == "a" * 40


@pytest.mark.django_db
def test_validate_model_on_folders(copy_of_tiny_llama, monkeypatch, hf_cache):
    status, out = run_command("validate_model", str(copy_of_tiny_llama), "--json")
    body = json.loads(out)
    assert status == 0 and (body["source"], body["path"], body["valid"]) == ("path", str(copy_of_tiny_llama), True)

    monkeypatch.chdir(copy_of_tiny_llama.parent)
    status, out = run_command("validate_model", copy_of_tiny_llama.name)
    assert status == 0 and f"  path:     {copy_of_tiny_llama}" in out

    (copy_of_tiny_llama / "config.json").unlink()
    status, out = run_command("validate_model", str(copy_of_tiny_llama))
    assert status == 1 and "ERROR [model_format_invalid] Model format invalid: missing config.json" in out


@pytest.mark.django_db
def test_validate_model_on_names_uses_overrides(copy_of_tiny_llama, hf_cache):
    ModelOverride.objects.create(model_name="org/local", path=str(copy_of_tiny_llama))
    status, out = run_command("validate_model", "org/local", "--json")
    assert status == 0 and json.loads(out)["source"] == "override"
    status, out = run_command("validate_model", "./no/such/folder")
    assert status == 1 and "[invalid_model_name]" in out


@pytest.mark.django_db
def test_validate_model_takes_a_revision_like_resolve_model(hf_cache):
    make_model_repo(hf_cache, "org/model")
    make_model_repo(hf_cache, "org/model", COMMIT_B, ref=False)
    set_ref(hf_cache, "org/model", COMMIT_B, ref="refs/pr/2")
    status, out = run_command("validate_model", "org/model", "--revision", "refs/pr/2", "--json")
    assert status == 0 and json.loads(out)["revision"] == COMMIT_B
    status, out = run_command("validate_model", "org/model", "--revision", "refs/pr/9")
    assert status == 1 and "[revision_not_found]" in out and "hf download org/model --revision refs/pr/9" in out
    status, out = run_command("validate_model", "org/model")
    assert status == 0 and "  revision: " + "a" * 40 in out and "  tokenizer vocabulary: tokenizer.json" in out


@pytest.mark.django_db
def test_validate_model_refuses_a_revision_for_a_folder(copy_of_tiny_llama):
    with pytest.raises(CommandError, match="--revision applies to a model name"):
        call_command("validate_model", str(copy_of_tiny_llama), "--revision", "main")


# --- list_models ----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_list_models_filters_and_exit_status(tiny_llama_in_cache, hf_cache):
    name, snapshot = tiny_llama_in_cache
    make_model_repo(hf_cache, "zz/broken", tokenizer=False)
    status, out = run_command("list_models", "--json")
    body = json.loads(out)
    assert status == 1  # one listed model is invalid
    assert body["cache_dir"] == str(hf_cache) and body["count"] == 2
    assert [m["model_name"] for m in body["models"]] == [name, "zz/broken"]

    status, out = run_command("list_models", "--valid")
    assert status == 0 and f"{name}  [cache, {snapshot.name[:12]}]  valid" in out and "zz/broken" not in out
    status, out = run_command("list_models", "--invalid")
    assert status == 1 and "zz/broken  [cache, aaaaaaaaaaaa]  INVALID" in out and "ERROR [tokenizer_missing]" in out
    status, out = run_command("list_models", "--query", "tiny", "--json")
    assert status == 0 and [m["model_name"] for m in json.loads(out)["models"]] == [name]


# --- create_api_token -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_api_token_for_a_new_staff_user(client, hf_cache):
    status, out = run_command("create_api_token", "robot", "--create-user", "--staff", "--name", "ci")
    assert status == 0
    raw = out.strip().splitlines()[-1]
    user = get_user_model().objects.get(username="robot")
    assert user.is_staff and not user.has_usable_password()
    token = ApiToken.objects.get(user=user)
    assert token.name == "ci" and token.token_hash == hash_token(raw)
    assert AuditEvent.objects.filter(action="api_token.create", via="cli").exists()
    resp = call(client, "patch", "/settings", {"allowed_output_roots": ["/data/out"]}, raw)
    assert resp.status_code == 200


@pytest.mark.django_db
def test_create_api_token_for_an_existing_member(client, hf_cache):
    get_user_model().objects.create_user("alice")
    status, out = run_command("create_api_token", "alice")
    raw = out.strip().splitlines()[-1]
    assert status == 0 and raw.startswith("mtm_") and " " not in raw
    assert call(client, "get", "/settings", token=raw).status_code == 200
    assert call(client, "patch", "/settings", {"model_cache_path": ""}, raw).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost"], "No user 'ghost'. Pass --create-user"),
        (["bad name!", "--create-user"], "'bad name!' is not a valid username"),
        (["x" * 200, "--create-user"], "is not a valid username"),
    ],
)
def test_create_api_token_usage_errors(args, message):
    with pytest.raises(CommandError) as caught:
        call_command("create_api_token", *args)
    assert caught.value.returncode == 2 and message in str(caught.value)
    assert not ApiToken.objects.exists()


# --- exit codes of real processes -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_exit_codes_of_real_processes(tiny_llama_in_cache, client):
    name, _ = tiny_llama_in_cache
    cases = [
        (["resolve_model", name], 0),
        (["resolve_model", "org/missing"], 1),
        (["resolve_model", "a--b"], 1),
        (["resolve_model"], 2),
        (["resolve_model", name, "--no-such-flag"], 2),
        (["list_models", "--valid", "--invalid"], 2),
        (["validate_model", "org/missing", "--json"], 1),
        (["create_api_token", "ghost"], 2),
    ]
    for args, expected in cases:
        done = manage(*args)
        assert done.returncode == expected, (args, done.stdout, done.stderr)
        if expected == 2:
            assert "error" in done.stderr.lower()
    assert "No user 'ghost'" in manage("create_api_token", "ghost").stderr

    done = manage("create_api_token", "robot", "--create-user")
    assert done.returncode == 0, done.stderr
    raw = done.stdout.strip().splitlines()[-1]
    assert call(client, "get", "/settings", token=raw).status_code == 200
