"""An upload refused on the new-project form (here: more rows than MTM_DATASET_MAX_ROWS) is deleted at once, and the
form keeps why: pressing Create project then shows the upload's problem at the dataset field, never a bare "No dataset
given.". The refusal names the file as the member uploaded it, never its stored path under media/datasets/<uuid>/.
The real views through the test client, a real upload into a real media folder, the tiny Llama in a real HF cache."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.clients import form_data, secure_client
from tests.token_counts import HX

LIMIT = 3
NAME = "newcomer-100rows.jsonl"
TOO_MANY = f"{NAME} has more than {LIMIT} rows"


@pytest.fixture
def member(portal_roots, settings) -> User:
    settings.MTM_DATASET_MAX_ROWS = LIMIT
    return User.objects.create_user("newcomer")


def rows(count: int) -> bytes:
    return "".join(f'{{"prompt": "Q{n}?", "completion": " A."}}\n' for n in range(count)).encode()


def upload(client, name: str = NAME, count: int = 10) -> str:
    response = client.post(
        "/projects/upload-dataset/", {"dataset_file": SimpleUploadedFile(name, rows(count)), "dataset_path": ""}, **HX
    )
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def refused_note(fragment: str) -> str:
    """The form's note of a refused upload ("" when the hidden box holds none)."""
    [box] = re.findall(r'<input type="hidden" name="refused_upload"[^>]*>', fragment)
    found = re.search(r'value="([^"]*)"', box)
    return found.group(1) if found else ""


def test_the_refused_upload_names_the_file_as_uploaded_not_its_stored_path(member, portal_roots):
    fragment = upload(secure_client(member))
    assert TOO_MANY in fragment and "Split it" in fragment
    assert "media/datasets" not in fragment and str(portal_roots / "media") not in fragment
    assert f"your upload {NAME}" in re.sub(r"<[^>]+>", "", fragment)
    uploads = portal_roots / "media" / "datasets"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_create_project_after_a_refused_upload_keeps_the_uploads_reason(member, portal_roots, tiny_llama_in_cache):
    client = secure_client(member)
    note = refused_note(upload(client))
    # The browser's file box is empty again and the path box was never filled: the form sends the note only.
    response = client.post(
        "/projects/new/", form_data(portal_roots, tiny_llama_in_cache[0], dataset_path="", refused_upload=note)
    )
    assert response.status_code == 422
    page = html.unescape(response.content.decode())
    assert "No dataset given." not in page
    assert f"Your upload {NAME} was refused and not kept" in page
    assert TOO_MANY in page and "media/datasets" not in page
    # The re-shown form keeps the note, so pressing Create project again says the same.
    again = client.post(
        "/projects/new/",
        form_data(portal_roots, tiny_llama_in_cache[0], dataset_path="", refused_upload=refused_note(page)),
    )
    assert TOO_MANY in html.unescape(again.content.decode())


def test_a_typed_path_after_a_refused_upload_wins(member, portal_roots, tiny_llama_in_cache):
    client = secure_client(member)
    note = refused_note(upload(client))
    response = client.post("/projects/new/", form_data(portal_roots, tiny_llama_in_cache[0], refused_upload=note))
    assert response.status_code == 302


def test_a_forged_or_someone_elses_note_is_ignored(member, portal_roots, tiny_llama_in_cache):
    note = refused_note(upload(secure_client(User.objects.create_user("other"))))
    for forged in (note, "not-a-signed-note"):
        response = secure_client(member).post(
            "/projects/new/", form_data(portal_roots, tiny_llama_in_cache[0], dataset_path="", refused_upload=forged)
        )
        page = html.unescape(response.content.decode())
        assert response.status_code == 422 and "No dataset given." in page and TOO_MANY not in page


def test_a_successful_upload_carries_no_note(member):
    fragment = upload(secure_client(member), "small.jsonl", LIMIT)
    assert refused_note(fragment) == ""
