"""The registry's pages through the test client: login, the models list and its HTMX filter, model detail,
the model-name field's inline check, the Settings page with its path checks, and the admin."""

from __future__ import annotations

import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils.html import escape

from models_registry.models import ModelOverride, PortalSettings
from mtm.models import ApiToken, AuditEvent
from tests.clients import HttpsClient
from tests.hfcache import add_file, make_model_repo

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client() -> Client:
    return HttpsClient()


@pytest.fixture
def member(django_user_model):
    return django_user_model.objects.create_user("member", password="member-pass-1234")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("boss", password="boss-pass-1234")


@pytest.fixture
def member_client(client, member):
    client.force_login(member)
    return client


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def broken_in_cache(hf_cache) -> str:
    make_model_repo(hf_cache, "org/broken", tokenizer=False)
    return "org/broken"


def text(response) -> str:
    return response.content.decode()


# --- access ---------------------------------------------------------------------------------------------------

PAGES = [
    ("get", "/"),
    ("get", "/models/"),
    ("get", "/models/org/model/"),
    ("get", "/models/validate-field/?model_name=org/model"),
    ("get", "/settings/"),
    ("post", "/settings/validate-path/"),
    ("get", "/accounts/password/"),
]


@pytest.mark.parametrize(("method", "url"), PAGES)
def test_every_page_sends_anonymous_visitors_to_login(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize(("method", "url"), [("get", "/settings/"), ("post", "/settings/validate-path/")])
def test_members_may_not_open_settings(member_client, method, url):
    response = getattr(member_client, method)(url, {"model_cache_path": "/tmp"})
    assert response.status_code == 403
    assert "Only staff" in text(response)


def test_login_page_logs_in_and_logout_is_a_post(client, member):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert 'name="username"' in text(page) and 'name="password"' in text(page)
    bad = client.post("/accounts/login/", {"username": "member", "password": "wrong"})
    assert bad.status_code == 200 and "alert-error" in text(bad)
    good = client.post("/accounts/login/", {"username": "member", "password": "member-pass-1234"})
    assert good.status_code == 302 and good["Location"] == "/"
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_navigation_shows_staff_links_only_to_staff(member_client, staff, hf_cache):
    body = text(member_client.get("/models/"))
    assert 'href="/models/"' in body and 'href="/projects/"' in body
    assert 'href="/settings/"' not in body and 'href="/admin/"' not in body
    assert '"x-csrftoken"' in body and "vendor/htmx-2.0.11.min.js" in body
    member_client.force_login(staff)
    body = text(member_client.get("/models/"))
    assert 'href="/settings/"' in body and 'href="/admin/"' in body


def test_the_admin_names_the_portal_and_its_models_plainly(staff_client):
    html = text(staff_client.get("/admin/", secure=True))
    assert "Model Training Manager administration" in html and "Django administration" not in html
    assert "API tokens" in html and "Api tokens" not in html


def test_password_change_page(member_client):
    response = member_client.post(
        "/accounts/password/",
        {"old_password": "member-pass-1234", "new_password1": "a-new-Pass-5678", "new_password2": "a-new-Pass-5678"},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    assert "Password changed" in text(member_client.get("/accounts/password/done/"))


# --- models list ----------------------------------------------------------------------------------------------


def test_models_page_lists_valid_and_broken_models(member_client, tiny_llama_in_cache, broken_in_cache, hf_cache):
    name, snapshot = tiny_llama_in_cache
    response = member_client.get("/models/")
    body = text(response)
    assert response.status_code == 200
    assert str(hf_cache) in body and "HF_HUB_CACHE" in body
    tiny_row = _row(body, name)
    assert 'badge-ok">valid' in tiny_row and snapshot.name[:10] in tiny_row and "badge-cache" in tiny_row
    assert f'href="/models/{name}/"' in tiny_row
    broken_row = _row(body, broken_in_cache)
    assert 'badge-error">invalid' in broken_row
    assert "Model format invalid: no tokenizer file" in broken_row
    assert "Check a model name" in body and "Validate Model" in body


def _row(body: str, name: str) -> str:
    rows = [r for r in re.findall(r"<tr>.*?</tr>", body, flags=re.S) if f">{name}<" in r]
    assert len(rows) == 1, f"{name} is not listed exactly once"
    return rows[0]


def test_htmx_filter_returns_only_the_rows(member_client, tiny_llama_in_cache, broken_in_cache):
    response = member_client.get("/models/", {"q": "BROK"}, **HX)
    body = text(response)
    assert response.status_code == 200
    assert "<html" not in body and "<tbody" not in body
    assert broken_in_cache in body and tiny_llama_in_cache[0] not in body
    assert "HX-Request" in response["Vary"]
    assert "HX-Request" in member_client.get("/models/")["Vary"]


def test_validity_filter(member_client, tiny_llama_in_cache, broken_in_cache):
    valid_only = text(member_client.get("/models/", {"valid": "true"}, **HX))
    assert tiny_llama_in_cache[0] in valid_only and broken_in_cache not in valid_only
    invalid_only = text(member_client.get("/models/", {"valid": "false"}, **HX))
    assert broken_in_cache in invalid_only and tiny_llama_in_cache[0] not in invalid_only


def test_history_restore_gets_the_whole_page(member_client, tiny_llama_in_cache):
    response = member_client.get("/models/", {"q": "tiny"}, HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HX)
    assert "<html" in text(response)


def test_no_match_and_empty_cache_say_what_to_do(member_client, hf_cache):
    empty = text(member_client.get("/models/"))
    assert "hf download" in empty and "create_demo_model" in empty and "Model Cache Path" in empty
    make_model_repo(hf_cache, "org/model")
    no_match = text(member_client.get("/models/", {"q": "nothing-like-it"}, **HX))
    assert "No model matches" in no_match and "create_demo_model" not in no_match


def test_override_is_listed_with_its_badge(member_client, hf_cache, copy_of_tiny_llama):
    ModelOverride.objects.create(model_name="local/llama", path=str(copy_of_tiny_llama))
    row = _row(text(member_client.get("/models/")), "local/llama")
    assert "badge-override" in row and 'badge-ok">valid' in row


# --- model detail ---------------------------------------------------------------------------------------------


def test_detail_of_a_valid_model(member_client, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    response = member_client.get(f"/models/{name}/")
    body = text(response)
    assert response.status_code == 200
    assert 'badge-ok">valid' in body and snapshot.name in body and str(snapshot) in body
    assert "<code>config.json</code>" in body and "<code>model.safetensors</code>" in body
    assert "symlink" in body and re.search(r"\d+(\.\d)?\xa0(bytes|KB|MB)", body)
    assert "cache: " in body  # the places searched
    assert "yes: ready to train" in body and "<code>tokenizer.json</code>" in body  # the vocabulary source


def test_detail_of_a_model_without_weights_says_it_cannot_train(member_client, hf_cache):
    from tests.hfcache import add_file

    make_model_repo(hf_cache, "org/gguf", weights=False)
    add_file(hf_cache, "org/gguf", "model.Q4_K_M.gguf", b"GGUF\x03\x00\x00\x00")
    body = text(member_client.get("/models/org/gguf/"))
    assert "yes, but not trainable" in body and "only GGUF weights (model.Q4_K_M.gguf)" in body
    assert "ready to train" not in body


def test_detail_of_a_broken_model_shows_error_and_hint(member_client, broken_in_cache):
    response = member_client.get(f"/models/{broken_in_cache}/")
    body = text(response)
    assert response.status_code == 200
    assert "Model format invalid: no tokenizer file" in body
    assert "hf download org/broken" in body
    assert 'badge-error">invalid' in body


def test_detail_of_a_missing_model_is_a_useful_404(member_client, hf_cache):
    response = member_client.get("/models/org/missing/")
    body = text(response)
    assert response.status_code == 404
    assert escape("Model 'org/missing' not found. Please ensure the model is downloaded") in body
    assert "hf download org/missing" in body and str(hf_cache / "models--org--missing") in body


def test_detail_of_an_unknown_revision(member_client, tiny_llama_in_cache):
    response = member_client.get(f"/models/{tiny_llama_in_cache[0]}/", {"revision": "nope"})
    assert response.status_code == 404
    assert "revision_not_found" in text(response)


@pytest.mark.parametrize("path", ["../../etc/passwd", "a/b/c", "org/na--me", "org/na%00me", "x" * 200 + "/y", "~/m"])
def test_detail_refuses_hostile_names(member_client, hf_cache, path):
    response = member_client.get(f"/models/{path}/")
    body = text(response)
    assert response.status_code == 400
    assert "Not a model name" in body and "Model name" in body


# --- the model-name field ---------------------------------------------------------------------------------------


def validate(client, **params):
    response = client.get("/models/validate-field/", params)
    assert response.status_code == 200
    assert "<html" not in text(response)
    return text(response)


def test_field_check_of_a_valid_model(member_client, tiny_llama_in_cache):
    name, snapshot = tiny_llama_in_cache
    body = validate(member_client, model_name=name)
    assert "status-" in body and 'badge-ok">valid' in body and snapshot.name[:10] in body and "cache" in body


def test_field_check_of_a_model_with_warnings_is_amber(member_client, hf_cache):
    make_model_repo(hf_cache, "org/no-weights", weights=False)
    body = validate(member_client, model_name="org/no-weights")
    assert "status-warn" in body and "weights" in body


def test_field_check_of_a_missing_model(member_client, hf_cache):
    body = validate(member_client, model_name="org/missing", revision="")
    assert "status-error" in body
    assert escape("Model 'org/missing' not found. Please ensure the model is downloaded") in body
    assert "hf download org/missing" in body


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../etc/passwd", "looks like a path"),
        ("a/b/c", "more than one"),
        ("org/na\x00me", "not a valid repo id"),
        ("x" * 10_000, "the limit is 96"),
        ("org/modèle", "non-ASCII"),
    ],
)
def test_field_check_of_hostile_names(member_client, hf_cache, name, expected):
    body = validate(member_client, model_name=name)
    assert "status-error" in body and expected in body


@pytest.mark.parametrize("revision", ["../main", "a\x00b", "r" * 10_000])
def test_field_check_of_hostile_revisions(member_client, tiny_llama_in_cache, revision):
    body = validate(member_client, model_name=tiny_llama_in_cache[0], revision=revision)
    assert "status-error" in body and "is neither a 40-character commit hash nor a branch or tag name" in body


def test_field_check_reads_prefixed_fields_and_revision(member_client, tiny_llama_in_cache):
    name, _ = tiny_llama_in_cache
    body = validate(member_client, **{"project-model_name": name, "project-revision": "no-such-branch"})
    assert "status-error" in body and "no-such-branch" in body


def test_field_check_of_nothing(member_client):
    assert "Checked as you type" in validate(member_client)


def test_field_snippet_contract(member_client, hf_cache):
    body = text(member_client.get("/models/"))
    assert 'hx-get="/models/validate-field/"' in body
    assert 'hx-trigger="input changed delay:400ms"' in body
    assert 'hx-target="#id_model_name-status"' in body and 'id="id_model_name-status"' in body


# --- settings -------------------------------------------------------------------------------------------------


def test_settings_page_shows_the_effective_cache(staff_client, hf_cache):
    body = text(staff_client.get("/settings/"))
    assert "Directory Settings" in body and "Model Cache Path" in body and str(hf_cache) in body
    assert 'hx-post="/settings/validate-path/"' in body


def test_settings_save_is_audited(staff_client, staff, hf_cache, tmp_path):
    outputs, datasets = tmp_path / "outputs", tmp_path / "datasets"
    datasets.mkdir()
    form = {
        "model_cache_path": str(hf_cache),
        "allowed_output_roots": f"{outputs}\n\n  {outputs}/  \n",
        "allowed_dataset_roots": str(datasets),
    }
    response = staff_client.post("/settings/", form, REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 302
    row = PortalSettings.load()
    assert (row.model_cache_path, row.allowed_output_roots, row.allowed_dataset_roots) == (
        str(hf_cache),
        [str(outputs)],
        [str(datasets)],
    )
    assert row.updated_by == staff
    event = AuditEvent.objects.get(action="portal_settings.update")
    assert (event.actor, event.remote_addr, event.via) == (staff, "10.1.2.3", "web")
    assert event.changes["allowed_output_roots"] == [[], [str(outputs)]]
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("Directory Settings saved" in m for m in messages)
    again = staff_client.post("/settings/", form, follow=True)
    assert "Nothing changed" in text(again)
    assert AuditEvent.objects.filter(action="portal_settings.update").count() == 1


def test_settings_errors_are_shown_inline_and_nothing_is_saved(staff_client, hf_cache, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    response = staff_client.post(
        "/settings/",
        {"model_cache_path": "relative/cache", "allowed_output_roots": f"/ok\n{a_file}", "allowed_dataset_roots": ""},
    )
    body = text(response)
    assert response.status_code == 422
    assert "Model Cache Path &#x27;relative/cache&#x27; is not an absolute path" in body
    assert f"Line 2: allowed output root {a_file} exists and is not a directory" in body
    assert PortalSettings.load().model_cache_path == ""
    assert not AuditEvent.objects.exists()


def path_status(client, **data) -> str:
    response = client.post("/settings/validate-path/", data)
    assert response.status_code == 200
    assert "<html" not in text(response)
    return text(response)


def test_path_check_of_the_cache(staff_client, tiny_llama_in_cache, hf_cache, tmp_path):
    assert "holds 1 model folder" in path_status(staff_client, model_cache_path=str(hf_cache))
    blank = path_status(staff_client, model_cache_path="")
    assert "Hugging Face default" in blank and str(hf_cache) in blank
    missing = path_status(staff_client, model_cache_path=str(tmp_path / "nowhere"))
    assert "status-warn" in missing and "does not exist yet" in missing
    # A folder above the hub: the models are one level down, and the check says so.
    assert f"use {hf_cache}" in path_status(staff_client, model_cache_path=str(hf_cache.parent))
    assert "not an absolute path" in path_status(staff_client, model_cache_path="hub")
    assert "NUL" in path_status(staff_client, model_cache_path="/tmp/a\x00b")


def test_path_check_of_roots(staff_client, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    body = path_status(staff_client, allowed_output_roots=f"{out}\n{tmp_path / 'new'}\nrelative")
    assert "exists and is writable" in body and "will be created" in body and "not an absolute path" in body
    datasets = path_status(staff_client, allowed_dataset_roots=str(tmp_path / "none"))
    assert "status-warn" in datasets and "does not exist" in datasets
    defaults = path_status(staff_client, allowed_output_roots="  ")
    assert "Blank: the server's default is used" in defaults
    assert path_status(staff_client, unrelated="x") == ""


# --- admin ----------------------------------------------------------------------------------------------------


def test_override_admin_validity_column_and_revalidate_action(staff_client, hf_cache, copy_of_tiny_llama, tmp_path):
    good = ModelOverride.objects.create(model_name="local/good", path=str(copy_of_tiny_llama))
    bad = ModelOverride.objects.create(model_name="local/bad", path=str(tmp_path / "gone"))
    changelist = text(staff_client.get("/admin/models_registry/modeloverride/"))
    assert "✔ valid" in changelist and "which is not a folder" in changelist
    response = staff_client.post(
        "/admin/models_registry/modeloverride/",
        {"action": "revalidate", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert any(m.startswith("local/good: valid") for m in messages)
    assert any(m.startswith("local/bad: Model 'local/bad' not found") for m in messages)


def test_override_admin_sets_authors_and_audits(staff_client, staff, copy_of_tiny_llama):
    form = {"model_name": "local/llama", "path": str(copy_of_tiny_llama), "enabled": "on", "note": ""}
    response = staff_client.post("/admin/models_registry/modeloverride/add/", form)
    assert response.status_code == 302
    override = ModelOverride.objects.get(model_name="local/llama")
    assert override.created_by == staff and override.updated_by == staff
    created = AuditEvent.objects.get(action="model_override.create")
    assert created.via == "admin" and created.changes["path"] == [None, str(copy_of_tiny_llama)]
    relative = staff_client.post(
        "/admin/models_registry/modeloverride/add/", {**form, "model_name": "a/b", "path": "x"}
    )
    assert "is not an absolute path" in text(relative)
    staff_client.post(f"/admin/models_registry/modeloverride/{override.pk}/delete/", {"post": "yes"})
    deleted = AuditEvent.objects.get(action="model_override.delete")
    assert deleted.changes["model_name"] == ["local/llama", None]


def test_portal_settings_admin_is_a_single_undeletable_row(staff_client, hf_cache):
    PortalSettings.load()
    assert staff_client.get("/admin/models_registry/portalsettings/add/").status_code == 403
    assert staff_client.get("/admin/models_registry/portalsettings/1/delete/").status_code == 403
    response = staff_client.post(
        "/admin/models_registry/portalsettings/1/change/",
        {"model_cache_path": str(hf_cache), "allowed_output_roots": "", "allowed_dataset_roots": ""},
    )
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="portal_settings.update").via == "admin"


def test_token_and_audit_admin_are_read_only(staff_client, staff):
    token, raw = ApiToken.issue(staff, "laptop")
    tokens = text(staff_client.get("/admin/mtm/apitoken/"))
    assert token.prefix in tokens and raw not in tokens
    assert staff_client.get("/admin/mtm/apitoken/add/").status_code == 403
    response = staff_client.post("/admin/mtm/apitoken/", {"action": "revoke", "_selected_action": [token.pk]})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    event = AuditEvent.objects.get(action="api_token.revoke")
    assert staff_client.get("/admin/mtm/auditevent/").status_code == 200
    assert staff_client.get("/admin/mtm/auditevent/add/").status_code == 403
    assert staff_client.get(f"/admin/mtm/auditevent/{event.pk}/delete/").status_code == 403
    detail = staff_client.post(f"/admin/mtm/auditevent/{event.pk}/change/", {"action": "x"})
    assert detail.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk, action="api_token.revoke").exists()


def test_unknown_page_is_a_plain_404(member_client):
    response = member_client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in text(response) and "/no-such-page/" in text(response)


def test_field_check_of_a_mistyped_name_suggests_the_cached_one(member_client, tiny_llama_in_cache):
    body = validate(member_client, model_name="test-org/tiny-lama")
    assert "status-error" in body and "Did you mean" in body
    assert 'href="/models/test-org/tiny-llama/"' in body


def test_field_check_of_a_name_in_the_wrong_case_suggests_the_cached_one(member_client, tiny_llama_in_cache):
    body = validate(member_client, model_name="Test-Org/Tiny-Llama")
    assert "Did you mean" in body and "<code>test-org/tiny-llama</code>" in body


def test_field_check_of_an_unrelated_name_suggests_nothing(member_client, tiny_llama_in_cache):
    body = validate(member_client, model_name="org/missing")
    assert "status-error" in body and "Did you mean" not in body


def test_field_offers_the_cached_models_as_you_type(member_client, tiny_llama_in_cache):
    body = text(member_client.get("/models/"))
    assert 'list="id_model_name-models"' in body
    assert '<datalist id="id_model_name-models"><option value="test-org/tiny-llama"></option></datalist>' in body


# --- the model page: chat template ------------------------------------------------------------------------------


def test_detail_says_where_the_chat_template_is(member_client, tiny_llama_in_cache):
    body = text(member_client.get(f"/models/{tiny_llama_in_cache[0]}/"))
    assert "Chat template" in body
    assert re.search(r"yes, in <code>(tokenizer_config\.json|chat_template\.jinja)</code>", body)


def test_detail_says_when_a_model_has_no_chat_template(member_client, hf_cache):
    make_model_repo(hf_cache, "org/base-model")
    body = text(member_client.get("/models/org/base-model/"))
    assert "Chat template" in body and "none: to train on a <code>messages</code> dataset" in body


def test_detail_finds_a_chat_template_saved_on_its_own(member_client, hf_cache):
    make_model_repo(hf_cache, "org/jinja-model")
    add_file(hf_cache, "org/jinja-model", "chat_template.jinja", "{{ messages }}")
    body = text(member_client.get("/models/org/jinja-model/"))
    assert "yes, in <code>chat_template.jinja</code>" in body


def test_detail_of_a_missing_model_says_nothing_of_a_chat_template(member_client, hf_cache):
    body = text(member_client.get("/models/org/missing/"))
    assert "Chat template" not in body
