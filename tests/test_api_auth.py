"""Who may call the API: bearer tokens (hashed, revocable), the browser session with CSRF, staff-only writes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from models_registry.models import ModelOverride
from mtm.models import ApiToken, hash_token
from tests.api_client import call, codes, make_user_token

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("post", "/projects/validate-model", {"model_name": "org/model"}),
    ("get", "/projects/models/available", None),
    ("post", "/projects/validate-output-dir", {"output_directory": "/tmp/x"}),
    ("get", "/model-overrides", None),
    ("post", "/model-overrides", {"model_name": "org/model", "path": "/m"}),
    ("get", "/model-overrides/1", None),
    ("patch", "/model-overrides/1", {"enabled": False}),
    ("delete", "/model-overrides/1", None),
    ("get", "/settings", None),
    ("patch", "/settings", {"allowed_output_roots": ["/x"]}),
    ("get", "/tokens", None),
    ("post", "/tokens", {"name": "laptop"}),
    ("post", "/tokens/1/revoke", None),
]
STAFF_WRITES = [
    ("post", "/model-overrides", {"model_name": "org/new", "path": "/m"}, 201),
    ("patch", "/model-overrides/{id}", {"note": "changed"}, 200),
    ("delete", "/model-overrides/{id}", None, 204),
    ("patch", "/settings", {"allowed_output_roots": ["/data/out"]}, 200),
]
CSRF_SECRET = "abcdefghijklmnopqrstuvwxyzABCDEF"  # 32 characters, the form of Django's CSRF cookie


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_endpoint_needs_credentials(client, hf_cache, method, path, body):
    resp = call(client, method, path, body)
    assert resp.status_code == 401
    assert resp["WWW-Authenticate"].startswith("Bearer")
    data = resp.json()
    assert codes(data["errors"]) == ["not_authenticated"]
    assert data["detail"] == "Authentication required." and "create_api_token" in data["errors"][0]["hint"]


@pytest.mark.parametrize(
    ("header", "code"),
    [("Bearer mtm_not-a-real-token", "invalid_token"), ("Bearer ", "invalid_token"), ("Bearer  \t", "invalid_token")],
)
def test_bad_bearer_tokens_are_401_with_a_reason(client, header, code):
    resp = client.get("/api/v1/settings", secure=True, headers={"Authorization": header})
    assert resp.status_code == 401 and codes(resp.json()["errors"]) == [code]


def test_other_auth_schemes_are_not_credentials(client):
    resp = client.get("/api/v1/settings", secure=True, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status_code == 401 and codes(resp.json()["errors"]) == ["not_authenticated"]


def test_token_is_stored_hashed_and_works(client, hf_cache):
    user, raw = make_user_token("alice")
    token = ApiToken.objects.get(user=user)
    assert token.token_hash == hash_token(raw) and raw not in token.token_hash and raw.startswith("mtm_")
    resp = call(client, "get", "/settings", token=raw)
    assert resp.status_code == 200 and "effective_cache_dir" in resp.json()


def test_revoked_token_is_401(client, hf_cache):
    user, raw = make_user_token("alice")
    ApiToken.objects.filter(user=user).update(revoked_at=timezone.now())
    resp = call(client, "get", "/settings", token=raw)
    assert resp.status_code == 401
    [error] = resp.json()["errors"]
    assert error["code"] == "token_revoked" and "revoked" in error["message"] and "create_api_token" in error["hint"]


def test_token_of_disabled_account_is_401(client, hf_cache):
    user, raw = make_user_token("alice")
    user.is_active = False
    user.save()
    resp = call(client, "get", "/settings", token=raw)
    assert resp.status_code == 401 and codes(resp.json()["errors"]) == ["account_disabled"]


def test_last_used_at_is_written_at_most_once_a_minute(client, hf_cache):
    user, raw = make_user_token("alice")
    token = ApiToken.objects.get(user=user)
    assert token.last_used_at is None
    call(client, "get", "/settings", token=raw)
    token.refresh_from_db()
    assert token.last_used_at is not None

    recent = timezone.now() - timedelta(seconds=30)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=recent)
    call(client, "get", "/settings", token=raw)
    token.refresh_from_db()
    assert token.last_used_at == recent

    stale = timezone.now() - timedelta(minutes=5)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=stale)
    call(client, "get", "/settings", token=raw)
    token.refresh_from_db()
    assert token.last_used_at > stale + timedelta(minutes=4)


@pytest.mark.parametrize(("method", "path", "body", "ok_status"), STAFF_WRITES)
def test_writes_are_staff_only(client, hf_cache, method, path, body, ok_status):
    override = ModelOverride.objects.create(model_name="org/existing", path="/m")
    path = path.format(id=override.pk)
    _, member = make_user_token("member")
    _, staff = make_user_token("boss", staff=True)

    resp = call(client, method, path, body, member)
    assert resp.status_code == 403
    [error] = resp.json()["errors"]
    assert error["code"] == "permission_denied" and error["message"].startswith("Only staff can")
    assert ModelOverride.objects.get(pk=override.pk).note == ""

    assert call(client, method, path, body, staff).status_code == ok_status


def test_members_may_read(client, hf_cache):
    ModelOverride.objects.create(model_name="org/existing", path="/m")
    _, member = make_user_token("member")
    assert call(client, "get", "/model-overrides", token=member).status_code == 200
    assert call(client, "get", "/settings", token=member).status_code == 200


def test_session_auth_and_csrf_on_writes(hf_cache):
    user, _ = make_user_token("boss", staff=True)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert call(browser, "get", "/settings").status_code == 200

    body = {"allowed_output_roots": ["/data/out"]}
    resp = call(browser, "patch", "/settings", body)
    assert resp.status_code == 403 and codes(resp.json()["errors"]) == ["csrf_failed"]
    assert "X-CSRFToken" in resp.json()["errors"][0]["hint"]

    browser.cookies["csrftoken"] = CSRF_SECRET
    headers = {"X-CSRFToken": CSRF_SECRET, "Referer": "https://testserver/settings/"}
    resp = call(browser, "patch", "/settings", body, headers=headers)
    assert resp.status_code == 200 and resp.json()["allowed_output_roots"] == ["/data/out"]


def test_bearer_requests_need_no_csrf(hf_cache):
    _, staff = make_user_token("boss", staff=True)
    script = Client(enforce_csrf_checks=True)
    resp = call(script, "patch", "/settings", {"allowed_output_roots": ["/data/out"]}, staff)
    assert resp.status_code == 200


def test_logged_out_session_is_401_not_csrf(hf_cache):
    browser = Client(enforce_csrf_checks=True)
    resp = call(browser, "post", "/model-overrides", {"model_name": "org/x", "path": "/m"})
    assert resp.status_code == 401 and codes(resp.json()["errors"]) == ["not_authenticated"]


# --- the caller's own tokens ------------------------------------------------------------------------------------


def test_a_token_issued_through_the_api_is_shown_once_and_works_until_revoked(client, hf_cache):
    from mtm.models import AuditEvent

    user, token = make_user_token("scripter")
    resp = call(client, "post", "/tokens", {"name": " nightly eval "}, token, REMOTE_ADDR="10.9.8.7")
    assert resp.status_code == 201
    issued = resp.json()
    raw = issued.pop("token")
    row = ApiToken.objects.get(pk=issued["id"])
    assert (row.user, row.name, row.token_hash) == (user, "nightly eval", hash_token(raw))
    assert raw.startswith(issued["prefix"]) and issued["revoked_at"] is None
    listed = call(client, "get", "/tokens", token=token).json()
    assert [t["id"] for t in listed] == [issued["id"], ApiToken.objects.get(name="tests").pk]
    assert all("token" not in t for t in listed)
    event = AuditEvent.objects.get(action="api_token.create")
    assert (event.actor, event.via, event.remote_addr, event.changes) == (
        user, "api", "10.9.8.7", {"name": [None, "nightly eval"]}
    )  # fmt: skip

    assert call(client, "get", "/tokens", token=raw).status_code == 200
    resp = call(client, "post", f"/tokens/{issued['id']}/revoke", token=token)
    assert resp.status_code == 200 and resp.json()["revoked_at"]
    rejected = call(client, "get", "/tokens", token=raw)
    assert rejected.status_code == 401 and codes(rejected.json()["errors"]) == ["token_revoked"]
    again = call(client, "post", f"/tokens/{issued['id']}/revoke", token=token)
    assert again.status_code == 409 and codes(again.json()["errors"]) == ["token_revoked"]
    assert AuditEvent.objects.filter(action="api_token.revoke").count() == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "a\x00b"])
def test_a_token_needs_a_sensible_name_in_the_api_too(client, name):
    _, token = make_user_token("scripter")
    resp = call(client, "post", "/tokens", {"name": name}, token)
    assert resp.status_code == 422 and resp.json()["errors"][0]["message"]
    assert ApiToken.objects.count() == 1


def test_nobody_revokes_another_persons_token_through_the_api(client):
    _, theirs = make_user_token("owner")
    other = ApiToken.objects.get(user__username="owner")
    for staff in (False, True):
        _, token = make_user_token(f"caller-{staff}", staff=staff)
        resp = call(client, "post", f"/tokens/{other.pk}/revoke", token=token)
        assert resp.status_code == 404 and codes(resp.json()["errors"]) == ["not_found"]
        assert other.pk not in [t["id"] for t in call(client, "get", "/tokens", token=token).json()]
    other.refresh_from_db()
    assert other.revoked_at is None and call(client, "get", "/tokens", token=theirs).status_code == 200
