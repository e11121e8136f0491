"""A project's dataset path, eval file or output folder given through a link to a folder whose name is not UTF-8
(any member with a shell can make one in her own folders): refused on save, on the form and through the API, with
the field named and the path shown readably (U+FFFD); never a 500.

Real folders made with bytes paths, real links, the real pages and API through the test client."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from projects.models import TrainingProject
from tests.api_client import call, make_user_token
from tests.clients import form_data, secure_client
from tests.test_owned_paths import fields

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def link_to_odd_folder(parent: Path, name: str = "mine") -> tuple[bytes, Path]:
    """A folder named with a byte that is not UTF-8 in `parent`, and a link `name` to it; returns (folder, link)."""
    odd = os.path.join(os.fsencode(parent), b"odd-\xff")
    os.mkdir(odd)
    link = parent / name
    os.symlink(odd, os.fsencode(link))
    return odd, link


def odd_dataset(root: Path) -> Path:
    """The team's qa.jsonl copied into the odd folder; the path through the link."""
    odd, link = link_to_odd_folder(root / "datasets")
    shutil.copyfile(root / "datasets" / "qa.jsonl", os.path.join(odd, b"qa.jsonl"))
    return link / "qa.jsonl"


def odd_output(root: Path) -> Path:
    return link_to_odd_folder(root / "outputs")[1] / "p"


def assert_not_utf8(error: dict, field: str, given: Path) -> None:
    assert (error["code"], error["field"]) == ("name_not_utf8", field), error
    assert str(given) in error["message"] and "odd-\ufffd" in error["message"] and "not UTF-8" in error["message"]
    assert "Rename" in error["hint"]


@pytest.mark.parametrize(("field", "make"), [("dataset_path", odd_dataset), ("output_directory", odd_output)])
def test_the_api_refuses_the_path_naming_the_field(team, client, tiny_llama_in_cache, field, make):
    given = make(team["root"])
    _, token = make_user_token("bob")
    body = fields(team["root"], tiny_llama_in_cache[0], **{field: str(given)})
    resp = call(client, "post", "/projects", body, token)
    assert resp.status_code == 422, resp.content
    [error] = [e for e in resp.json()["errors"] if e["field"] == field]
    assert_not_utf8(error, field, given)
    assert not TrainingProject.objects.exists()


def test_the_api_refuses_such_an_eval_file_and_such_a_change(team, client, tiny_llama_in_cache):
    _, token = make_user_token("bob")
    created = call(client, "post", "/projects", fields(team["root"], tiny_llama_in_cache[0]), token)
    assert created.status_code == 201, created.content
    given = odd_dataset(team["root"])
    changed = call(client, "patch", f"/projects/{created.json()['id']}", {"eval_dataset_path": str(given)}, token)
    assert changed.status_code == 422, changed.content
    [error] = [e for e in changed.json()["errors"] if e["field"] == "eval_dataset_path"]
    assert_not_utf8(error, "eval_dataset_path", given)
    assert not TrainingProject.objects.get().eval_dataset_path


@pytest.mark.parametrize(("field", "make"), [("dataset_path", odd_dataset), ("output_directory", odd_output)])
def test_the_form_shows_the_error_at_the_field(team, tiny_llama_in_cache, field, make):
    given = make(team["root"])
    browser = secure_client(team["alice"], raise_request_exception=False)
    resp = browser.post("/projects/new/", form_data(team["root"], tiny_llama_in_cache[0], **{field: str(given)}))
    assert resp.status_code == 422, resp.status_code  # the form again, with its errors
    page = resp.content.decode()
    assert "named with bytes that are not UTF-8" in page and "odd-\ufffd" in page
    at_field = page.split(f'id="id_{field}"', 1)[1].split('class="errorlist"', 1)[1].split("</ul>", 1)[0]
    assert "not UTF-8" in at_field  # the field's own error list
    assert not TrainingProject.objects.exists()
    check = "/projects/check-dataset/" if field == "dataset_path" else "/projects/check-output-dir/"
    inline = browser.get(check, {field: str(given)}, **HX)
    assert inline.status_code == 200 and "not UTF-8" in inline.content.decode()
