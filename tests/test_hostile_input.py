"""Hostile model names, paths and dataset files through the HTML forms and the JSON API alike: each one gets a 4xx,
or for an HTMX check fragment a 200 whose fragment shows the error, that names the problem; never a 500.

The portal's roots are temp folders (outputs/ and datasets/ under tmp_path, uploads under tmp_path/media), the tiny
Llama is in the HF cache, and elsewhere/ is a folder outside every root that symlinks inside the roots point to.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models_registry.models import PortalSettings
from projects.models import TrainingProject
from tests.api_client import API, call, make_user_token
from tests.clients import browser_defaults, secure_client
from tests.pipeline_helpers import QA_ROWS, write_jsonl

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
# No answer grows past this, whatever was sent: the 5 MB line must not come back in it. (The 50k-column CSV's
# answer is about 1 MB today, because its message names every column.)
MAX_ANSWER_BYTES = 2 * 1024 * 1024


@dataclass
class Portal:
    model_name: str
    root: Path
    outputs: Path
    datasets: Path
    elsewhere: Path  # outside every root


@pytest.fixture
def portal(portal_roots, tiny_llama_in_cache) -> Portal:
    root = portal_roots
    portal = Portal(tiny_llama_in_cache[0], root, root / "outputs", root / "datasets", root / "elsewhere")
    write_jsonl(portal.elsewhere / "secret.jsonl", QA_ROWS)
    (portal.outputs / "escape").symlink_to(portal.elsewhere, target_is_directory=True)
    (portal.datasets / "leak.jsonl").symlink_to(portal.elsewhere / "secret.jsonl")
    return portal


@pytest.fixture
def member_client(db):
    return secure_client(User.objects.create_user("mallory", password="mallory-pass-1234"))


@pytest.fixture
def staff_client(db):
    return secure_client(User.objects.create_user("root-ish", is_staff=True))


@pytest.fixture
def member_token(db) -> str:
    return make_user_token("mallory-api")[1]


def text(response) -> str:
    """The answer as a person reads it (HTML entities decoded); fails on a 5xx or an answer that is too large."""
    assert response.status_code < 500, response.content[:2000]
    assert len(response.content) < MAX_ANSWER_BYTES, f"{len(response.content)} bytes"
    return html.unescape(response.content.decode())


def fragment(response) -> str:
    assert response.status_code == 200
    body = text(response)
    assert "<html" not in body
    return body


def upload(client, token: str, name: str, content: bytes, **form):
    """POST /api/v1/datasets with `content` as the multipart file `name`."""
    data = {"file": SimpleUploadedFile(name, content), **form}
    return client.post(API + "/datasets", data, secure=True, headers={"Authorization": f"Bearer {token}"})


def api_errors(response, status: int = 422) -> list[dict]:
    assert response.status_code == status, response.content[:2000]
    body = response.json()
    assert body["detail"] and body["errors"]
    assert all(e["code"] and e["message"] for e in body["errors"])
    return body["errors"]


# --- model names: the field check and validate-model, driven by hypothesis -------------------------------------

HOSTILE_NAMES = [
    "../../etc/passwd", "/etc/passwd", "~/.ssh/id_rsa", "C:\\models\\llama", "org/na\x00me", "\x00", " ", "\t\n",
    "x" * 10_000, "org/" + "a" * 200, "org/na--me", "org/name/../../x", "org/<script>alert(1)</script>",
    "\u202eorg/name", "org/modèle", "org/name.git", "%2e%2e/%2e%2e", "org/name\n", "'; DROP TABLE x; --",
]  # fmt: skip
NAMES = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.text(st.characters(codec="utf-8"), max_size=120),
    st.from_regex(r"[A-Za-z0-9._/~-]{1,110}", fullmatch=True),
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(name=NAMES)
def test_model_name_field_check_answers_every_name_with_its_verdict(member_client, portal, name):
    response = member_client.get("/models/validate-field/", {"model_name": name}, **HX)
    body = fragment(response)
    assert "<script>alert" not in response.content.decode()  # markup typed into the box arrives escaped
    if not name.strip():
        assert "Checked as you type" in body
    elif name.strip() == portal.model_name:
        assert "valid" in body and "status-error" not in body
    else:
        assert "status-error" in body
        assert "Model name" in body or f"Model '{name.strip()}' not found" in body


@FUZZ
@given(name=NAMES)
def test_validate_model_api_answers_every_name_with_422_or_a_verdict(client, portal, member_token, name):
    response = call(client, "post", "/projects/validate-model", {"model_name": name}, member_token)
    if response.status_code == 422:
        [error] = api_errors(response)
        assert error["code"] == "invalid_model_name" and error["message"].startswith("Model name") and error["hint"]
        return
    assert response.status_code == 200, response.content[:2000]
    result = response.json()
    assert result["valid"] is (name == portal.model_name)
    if not result["valid"]:
        assert [e["code"] for e in result["errors"]] == ["model_not_found"]
        assert result["errors"][0]["message"].startswith(
            f"Model '{name}' not found. Please ensure the model is downloaded"
        )


# --- model detail URLs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "org%2F..%2F..%2Fetc", "%00", "org/na%00me", "org/" + "a" * 5000,
     "org/%3Cscript%3Ealert(1)%3C/script%3E", "~root/.ssh", "a/b/c/d"],
)  # fmt: skip
def test_model_detail_of_a_hostile_name_is_400_naming_it(member_client, portal, path):
    response = member_client.get(f"/models/{path}/")
    assert response.status_code == 400
    assert "Model name" in text(response)
    assert "<script>alert" not in response.content.decode()


@pytest.mark.parametrize("revision", ["../../etc", "a\x00b", "r" * 10_000, "refs/../../../x"])
def test_model_detail_with_a_hostile_revision_is_400_naming_it(member_client, portal, revision):
    response = member_client.get(f"/models/{portal.model_name}/", {"revision": revision})
    assert response.status_code == 400
    assert "is neither a 40-character commit hash nor a branch or tag name" in text(response)


# --- the Settings form (staff) ----------------------------------------------------------------------------------

SETTINGS_CASES = [
    ("model_cache_path", "relative/cache", "is not an absolute path"),
    ("model_cache_path", "/tmp/cache\x00x", "Null characters are not allowed"),
    ("model_cache_path", "/" + "c" * 10_000, "at most 4096 characters"),
    ("allowed_output_roots", "relative/outputs", "is not an absolute path"),
    ("allowed_output_roots", "/srv/ok\n/srv/bad\x00root", "Null characters are not allowed"),
    ("allowed_output_roots", "/" + "o" * 10_000, "the limit is 4096"),
    ("allowed_dataset_roots", "../../etc", "is not an absolute path"),
    ("allowed_dataset_roots", "/etc/passwd", "exists and is not a directory"),
]


@pytest.mark.parametrize(("field", "value", "expected"), SETTINGS_CASES)
def test_settings_form_refuses_hostile_paths_inline(portal, staff_client, field, value, expected):
    before = PortalSettings.load()
    posted = {
        "model_cache_path": before.model_cache_path,
        "allowed_output_roots": "\n".join(before.allowed_output_roots),
        "allowed_dataset_roots": "\n".join(before.allowed_dataset_roots),
        field: value,
    }
    response = staff_client.post("/settings/", posted)
    assert response.status_code == 422  # the form again, not the redirect of a save
    errors = " ".join(response.context["form"].errors.get(field, []))
    assert expected in html.unescape(errors)
    assert expected in text(response)
    after = PortalSettings.load()
    assert [after.model_cache_path, after.allowed_output_roots, after.allowed_dataset_roots] == [
        before.model_cache_path,
        before.allowed_output_roots,
        before.allowed_dataset_roots,
    ]


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("model_cache_path", "rel\x00ative", "NUL character"), ("allowed_output_roots", "out\n../../etc", "not an absolute"),
     ("allowed_dataset_roots", "/" + "d" * 10_000, "the limit is 4096")],
)  # fmt: skip
def test_settings_path_check_fragment_names_the_problem(portal, staff_client, field, value, expected):
    body = fragment(staff_client.post("/settings/validate-path/", {field: value}, **HX))
    assert "status-error" in body and expected in body


# --- hostile dataset files --------------------------------------------------------------------------------------


def _nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DATASET_FILES = {
    # id: (file name, content, what the answer says)
    "binary": ("train.jsonl", bytes(range(256)) * 64, "is a binary file, not text"),
    "utf16": ("train.jsonl", '{"prompt": "hi", "completion": "there"}\n'.encode("utf-16"), "UTF-16 text"),
    "50k_columns": (
        "wide.csv",
        (",".join(f"c{i}" for i in range(50_000)) + "\n" + ",".join("v" * 50_000) + "\n").encode(),
        "Row 1 (line 2)",
    ),
    "5mb_line": (
        "long.jsonl",
        b'{"prompt": "a", "completion": "b"}\n{"prompt": "' + b"x" * (5 * 1024 * 1024) + b"\n",
        "Row 2 (line 2) is 5,242,892 bytes",  # over MTM_DATASET_MAX_ROW_BYTES: refused before it is parsed
    ),
    "deeply_nested": ("nested.json", _nested_json(100_000), "Row 1 (line 1): the JSON is nested too deeply"),
    "deeply_nested_line": (
        "nested.jsonl",
        b'{"prompt": "a", "completion": "b"}\n{"prompt": ' + _nested_json(100_000) + b"}\n",
        "Row 2 (line 2): the JSON is nested too deeply",
    ),
}
DATASET_IDS = list(DATASET_FILES)


def project_post(portal: Portal, **changes) -> dict:
    """What a browser posts for the new-project form: every box with its default, and a valid project's fields."""
    posted = browser_defaults()
    posted.update(
        name="hostile",
        model_name=portal.model_name,
        dataset_path=str(portal.datasets / "qa.jsonl"),
        output_directory=str(portal.outputs / "hostile"),
        max_steps="2",
        max_seq_length="32",
    )
    return {**posted, **changes}


def refused_form(response, field: str, expected: str) -> None:
    assert response.status_code == 422
    errors = html.unescape(" ".join(str(e) for e in response.context["form"].errors.get(field, [])))
    assert expected in errors, response.context["form"].errors
    assert expected in text(response)
    assert not TrainingProject.objects.exists()


def test_the_valid_project_post_is_accepted(member_client, portal):
    """The base every hostile post below changes one field of."""
    response = member_client.post("/projects/new/", project_post(portal))
    assert response.status_code == 302, response.context["form"].errors if response.context else response
    assert TrainingProject.objects.get().owner.username == "mallory"


@pytest.mark.parametrize("key", DATASET_IDS)
def test_project_form_refuses_a_hostile_dataset_file_on_the_server(member_client, portal, key):
    name, content, expected = DATASET_FILES[key]
    path = portal.datasets / name
    path.write_bytes(content)
    refused_form(
        member_client.post("/projects/new/", project_post(portal, dataset_path=str(path))), "dataset_path", expected
    )


@pytest.mark.parametrize("key", DATASET_IDS)
def test_project_form_refuses_a_hostile_dataset_upload(member_client, portal, key):
    name, content, expected = DATASET_FILES[key]
    posted = project_post(portal, dataset_path="", dataset_file=SimpleUploadedFile(name, content))
    response = member_client.post("/projects/new/", posted)
    assert response.status_code == 422
    assert expected in text(response)
    assert not TrainingProject.objects.exists()


@pytest.mark.parametrize("key", DATASET_IDS)
def test_dataset_upload_fragment_shows_the_problem(member_client, portal, key):
    name, content, expected = DATASET_FILES[key]
    response = member_client.post(
        "/projects/upload-dataset/", {"dataset_file": SimpleUploadedFile(name, content)}, **HX
    )
    assert expected in fragment(response)


@pytest.mark.parametrize("key", DATASET_IDS)
def test_api_dataset_upload_refuses_a_hostile_file(client, portal, member_token, key):
    name, content, expected = DATASET_FILES[key]
    response = upload(client, member_token, name, content, model_name=portal.model_name)
    errors = api_errors(response)
    assert all(e["field"] == "file" for e in errors)
    assert any(expected in e["message"] for e in errors), errors
    assert len(response.content) < MAX_ANSWER_BYTES


@pytest.mark.parametrize(("upload_name", "expected"), [("evil.sh", "is not a JSON Lines, JSON or CSV file"),
                                                       (".bashrc.jsonl", "is not a plain file name"),
                                                       ("data.jsonl.sh", "is not a JSON Lines, JSON or CSV file")])  # fmt: skip
def test_hostile_upload_names_are_refused_in_the_form_and_the_api(client, member_client, portal, member_token,
                                                                  upload_name, expected):  # fmt: skip
    content = b'{"prompt": "a", "completion": "b"}\n'
    posted = project_post(portal, dataset_path="", dataset_file=SimpleUploadedFile(upload_name, content))
    refused_form(member_client.post("/projects/new/", posted), "dataset_file", expected)
    assert any(expected in e["message"] for e in api_errors(upload(client, member_token, upload_name, content)))


def test_an_upload_named_with_a_path_is_stored_inside_the_uploads_folder(client, portal, member_token, settings):
    """Only the name's last part is kept, so '../../' in it cannot place the file anywhere else."""
    content = b'{"prompt": "a", "completion": "b"}\n'
    response = upload(client, member_token, "../../../../escape.jsonl", content)
    assert response.status_code == 200, response.content[:2000]
    stored = Path(response.json()["dataset_path"])
    assert stored.name == "escape.jsonl"
    assert stored.resolve().is_relative_to((Path(settings.MEDIA_ROOT) / "datasets").resolve())
    assert not (portal.root / "escape.jsonl").exists()


# --- hostile names and paths in the project form and POST /api/v1/projects -------------------------------------


def _case(field, value, form_expected, api_expected=None, api_field=None):
    return pytest.param(field, value, form_expected, api_expected or form_expected, api_field or field, id=field)


PROJECT_CASES = [
    _case("model_name", "../../etc/passwd", "looks like a path"),
    _case("model_name", "org/na\x00me", "Null characters are not allowed", "not a valid repo id"),
    _case("model_name", "x" * 300, "at most 200 characters", "the limit is 96"),
    _case("model_name", "org/<script>alert(1)</script>", "not a valid repo id"),
    _case("output_directory", "../../etc", "is not an absolute path"),
    _case("output_directory", "/etc/passwd", "outside the allowed output roots"),
    _case("output_directory", "{outputs}/escape/run", "outside the allowed output roots"),
    _case("output_directory", "/tmp/out\x00put", "Null characters are not allowed", "must not contain NUL"),
    _case("output_directory", "/" + "o" * 10_000, "at most 4096 characters", "at most 4096 characters"),
    _case("dataset_path", "/etc/passwd", "outside the allowed dataset roots"),
    _case("dataset_path", "../../etc/passwd", "is not an absolute path"),
    _case("dataset_path", "{datasets}/leak.jsonl", "outside the allowed dataset roots"),
    _case("dataset_path", "{datasets}/../elsewhere/secret.jsonl", "outside the allowed dataset roots"),
]


def _fill(value: str, portal: Portal) -> str:
    return value.replace("{outputs}", str(portal.outputs)).replace("{datasets}", str(portal.datasets))


@pytest.mark.parametrize(("field", "value", "form_expected", "api_expected", "api_field"), PROJECT_CASES)
def test_project_form_refuses_hostile_names_and_paths(member_client, portal, field, value, form_expected, api_expected,
                                                      api_field):  # fmt: skip
    response = member_client.post("/projects/new/", project_post(portal, **{field: _fill(value, portal)}))
    refused_form(response, field, form_expected)
    assert "<script>alert" not in response.content.decode()


@pytest.mark.parametrize(("field", "value", "form_expected", "api_expected", "api_field"), PROJECT_CASES)
def test_projects_api_refuses_hostile_names_and_paths(client, portal, member_token, field, value, form_expected,
                                                      api_expected, api_field):  # fmt: skip
    body = {
        "name": "hostile",
        "model_name": portal.model_name,
        "dataset_path": str(portal.datasets / "qa.jsonl"),
        "output_directory": str(portal.outputs / "hostile"),
        "hyperparameters": {"max_steps": 2, "max_seq_length": 32},
        field: _fill(value, portal),
    }
    errors = api_errors(call(client, "post", "/projects", body, member_token))
    named = [e for e in errors if e.get("field") == api_field or e["message"].startswith(f"body.{api_field}")]
    assert any(api_expected in e["message"] for e in named), errors
    assert not TrainingProject.objects.exists()


# models_registry/outputs.py walks up to the nearest existing folder and probes that, so a name longer than the
# filesystem allows (NAME_MAX, 255 bytes) is reported valid and "will be created"; the run then fails to create it.
def test_an_output_directory_name_longer_than_the_filesystem_allows_is_refused(
    client, member_client, portal, member_token
):
    overlong = str(portal.outputs / ("a" * 300))
    result = call(client, "post", "/projects/validate-output-dir", {"output_directory": overlong}, member_token).json()
    assert result["valid"] is False and [e["code"] for e in result["errors"]] == ["path_too_long"]
    response = member_client.post("/projects/new/", project_post(portal, output_directory=overlong))
    assert response.status_code == 422 and response.context["form"].errors.get("output_directory")


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("output_directory", "../../etc", "is not an absolute path"),
    ("output_directory", "/etc/passwd", "outside the allowed output roots"),
    ("output_directory", "{outputs}/escape", "resolves to"),
    ("dataset_path", "/etc/passwd", "outside the allowed dataset roots"),
    ("dataset_path", "{datasets}/leak.jsonl", "resolves to"),
    ("dataset_path", "a\x00b", "NUL"),
])  # fmt: skip
def test_project_form_check_fragments_name_the_problem(member_client, portal, field, value, expected):
    url = "/projects/check-output-dir/" if field == "output_directory" else "/projects/check-dataset/"
    body = fragment(member_client.get(url, {field: _fill(value, portal)}, **HX))
    assert expected in body


@pytest.mark.parametrize("key", DATASET_IDS)
def test_dataset_check_fragment_of_a_hostile_file_on_the_server(member_client, portal, key):
    name, content, expected = DATASET_FILES[key]
    (portal.datasets / name).write_bytes(content)
    params = {"dataset_path": str(portal.datasets / name), "model_name": portal.model_name}
    assert expected in fragment(member_client.get("/projects/check-dataset/", params, **HX))


def test_dataset_json_content_is_checked_not_trusted(client, portal, member_token):
    """A .json upload holding a row with markup and odd keys is accepted as data, and comes back as data."""
    rows = [{"prompt": "<script>alert(1)</script>", "completion": "{{ 7*7 }}", "__proto__": {"x": 1}}]
    response = upload(client, member_token, "rows.json", json.dumps(rows).encode())
    assert response.status_code == 200, response.content[:2000]
    report = response.json()["report"]
    assert report["preview"][0]["prompt"] == "<script>alert(1)</script>"
    assert any("__proto__" in w["message"] for w in report["warnings"])
