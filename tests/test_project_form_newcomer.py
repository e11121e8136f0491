"""The New project form, through the test client: one error (not two) for a LoRA target the
model lacks, the LoRA targets and the max sequence length checked against the model as they are typed, the output
folder following the project's name, a folder shared with another project named, and example paths inside the
allowed roots. The tiny Llama of tests/conftest.py has a 512-token context and layers q_proj, k_proj, v_proj, ..."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils.html import escape

from projects.models import TrainingProject
from tests.clients import form_data, secure_client

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


def text(response) -> str:
    return response.content.decode()


def errors_under(html: str, box: str) -> list[str]:
    """The items of the error list under the box `box` (its field's <ul class="errorlist">, if any)."""
    start = html.index(f'id="id_{box}"')
    field = html[start : html.index('<div class="field', start)]
    found = re.search(r'<ul class="errorlist">(.*?)</ul>', field, re.S)
    return re.findall(r"<li>(.*?)</li>", found.group(1), re.S) if found else []


# --- LoRA target names ------------------------------------------------------------------------------------------


def test_a_lora_target_the_model_lacks_gets_one_error_not_a_second_null_one(alice, portal_roots, tiny_llama_in_cache):
    client = secure_client(alice)
    data = form_data(
        portal_roots, tiny_llama_in_cache[0], method="lora", lora_target_modules="q_proj, v_proj, qkv_projj"
    )
    page = text(client.post("/projects/new/", data))
    assert not TrainingProject.objects.exists()
    under = errors_under(page, "lora_target_modules")
    assert len(under) == 1, under
    assert "qkv_projj" in under[0] and "q_proj" in under[0] and "v_proj" in under[0]
    assert "null" not in page and "is not allowed" not in page


def test_lora_targets_are_checked_against_the_model_as_they_are_typed(alice, portal_roots, tiny_llama_in_cache):
    client = secure_client(alice)
    url = "/projects/check-hyperparameter/lora_target_modules/"
    asked = {"model_name": tiny_llama_in_cache[0], "method": "lora"}
    typo = text(client.get(url, {**asked, "lora_target_modules": "q_proj, v_proj, qkv_projj"}, **HX))
    assert "status-error" in typo and escape("'qkv_projj'") in typo and "k_proj" in typo  # the model's real layers
    assert text(client.get(url, {**asked, "lora_target_modules": "q_proj, v_proj"}, **HX)).strip() == ""
    assert text(client.get(url, {**asked, "lora_target_modules": "all-linear"}, **HX)).strip() == ""
    unreadable = text(client.get(url, {**asked, "lora_target_modules": "q proj"}, **HX))
    assert "status-error" in unreadable and "is not allowed" in unreadable
    full = text(client.get(url, {**asked, "method": "full", "lora_target_modules": "qkv_projj"}, **HX))
    assert full.strip() == ""  # not used by a full fine-tune
    assert client.get("/projects/check-hyperparameter/no_such_box/", HX).status_code == 404
    assert client.get("/projects/check-hyperparameter/packing/", HX).status_code == 404  # a checkbox: nothing to type


# --- every hyperparameter box, as it is typed and on save ----------------------------------------------------------


def test_a_value_out_of_range_is_shown_under_its_own_box_as_it_is_typed(alice, portal_roots, tiny_llama_in_cache):
    client = secure_client(alice)
    url = "/projects/check-hyperparameter/learning_rate/"
    wrong = text(client.get(url, {"learning_rate": "-1"}, **HX))
    assert "status-error" in wrong and "greater than 0" in wrong
    assert text(client.get(url, {"learning_rate": "0.0002"}, **HX)).strip() == ""
    page = text(client.get("/projects/new/"))
    assert 'id="learning_rate-status"' in page and 'hx-get="/projects/check-hyperparameter/learning_rate/"' in page


def test_the_refusal_banner_links_to_each_box_that_holds_an_error(alice, portal_roots, tiny_llama_in_cache):
    client = secure_client(alice)
    data = form_data(portal_roots, tiny_llama_in_cache[0], learning_rate="-1", epochs="0")
    page = text(client.post("/projects/new/", data))
    banner = page.split('role="alert"')[1].split("</div>")[0]
    assert re.search(r'<a href="#id_epochs">Epochs</a>, <a href="#id_learning_rate">Learning rate</a>', banner), banner
    assert 'id="id_learning_rate"' in page and errors_under(page, "learning_rate")


# --- max sequence length ----------------------------------------------------------------------------------------


def test_a_max_sequence_length_above_the_context_length_is_warned_as_it_is_typed(
    alice, portal_roots, tiny_llama_in_cache
):
    client = secure_client(alice)
    url = "/projects/check-hyperparameter/max_seq_length/"
    for typed in ("1024", "2048"):
        warned = text(client.get(url, {"model_name": tiny_llama_in_cache[0], "max_seq_length": typed}, **HX))
        assert "badge-warn" in warned and f"Max sequence length {typed}" in warned and "(512 tokens)" in warned
    assert text(client.get(url, {"model_name": tiny_llama_in_cache[0], "max_seq_length": "512"}, **HX)).strip() == ""
    assert text(client.get(url, {"model_name": "", "max_seq_length": "2048"}, **HX)).strip() == ""
    # The form the model's page opens shows it at once: the default (1024) is above the tiny model's 512.
    page = text(client.get("/projects/new/", {"model": tiny_llama_in_cache[0]}))
    status = page[page.index('id="max_seq_length-status"') :]
    assert "Max sequence length 1024" in status[: status.index("</div>")]
    assert 'hx-get="/projects/check-hyperparameter/max_seq_length/"' in page


# --- the output folder follows the name --------------------------------------------------------------------------


def test_the_output_folder_follows_the_name_until_the_member_changes_it(alice, portal_roots):
    client = secure_client(alice)
    outputs = portal_roots / "outputs"
    page = text(client.get("/projects/new/"))
    suggested = f"{outputs}/my-project"
    assert f'name="output_directory" value="{suggested}"' in page.replace(' maxlength="4096"', "")
    assert 'name="output_suggested"' in page and 'hx-get="/projects/follow-output-dir/"' in page
    followed = client.get(
        "/projects/follow-output-dir/",
        {"name": "Support Bot", "output_directory": suggested, "output_suggested": suggested},
        **HX,
    )
    assert followed.status_code == 200
    assert f'value="{outputs}/support-bot"' in text(followed) and 'id="output-field"' in text(followed)
    assert "will be created" in text(followed)  # the new folder's check comes with it
    (outputs / "support-bot").mkdir()  # taken: the next free name
    again = text(
        client.get(
            "/projects/follow-output-dir/",
            {"name": "Support Bot", "output_directory": suggested, "output_suggested": suggested},
            **HX,
        )
    )
    assert f'value="{outputs}/support-bot-2"' in again
    edited = client.get(
        "/projects/follow-output-dir/",
        {"name": "Support Bot", "output_directory": f"{outputs}/mine", "output_suggested": suggested},
        **HX,
    )
    assert edited.status_code == 204  # htmx leaves the box as she typed it


def test_an_edit_form_keeps_its_output_folder_whatever_the_name(alice, portal_roots, tiny_llama_in_cache):
    project = TrainingProject.objects.create(
        name="demo",
        owner=alice,
        model_name=tiny_llama_in_cache[0],
        dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
        output_directory=str(portal_roots / "outputs" / "demo"),
        method="lora",
        hyperparameters={},
    )
    page = text(secure_client(alice).get(f"/projects/{project.pk}/edit/"))
    assert "follow-output-dir" not in page


# --- a folder another project uses ------------------------------------------------------------------------------


def test_a_folder_another_project_uses_is_named_with_that_project(alice, portal_roots):
    folder = portal_roots / "outputs" / "support-bot"
    folder.mkdir()
    (folder / "run-1").mkdir()
    TrainingProject.objects.create(
        name="support-bot",
        owner=alice,
        model_name="test-org/tiny-llama",
        dataset_path=str(portal_roots / "datasets" / "qa.jsonl"),
        output_directory=str(folder),
        method="lora",
        hyperparameters={},
    )
    shown = text(secure_client(alice).get("/projects/check-output-dir/", {"output_directory": str(folder)}, **HX))
    assert "already holds 1 entry." in shown and "1 entries" not in shown
    assert escape("of project 'support-bot':") in shown and "status-error" not in shown
    staff = User.objects.create_superuser("boss", password="boss-pass-1234")
    seen_by_staff = text(secure_client(staff).get("/projects/check-output-dir/", {"output_directory": str(folder)}))
    assert escape("of project 'support-bot' (owner alice)") in seen_by_staff
    inside = text(secure_client(alice).get("/projects/check-output-dir/", {"output_directory": str(folder / "x")}))
    assert escape("is inside the output directory") in inside and escape("'support-bot'") in inside


# --- example paths ----------------------------------------------------------------------------------------------


def test_example_paths_lie_inside_the_allowed_roots(alice, portal_roots):
    page = text(secure_client(alice).get("/projects/new/"))
    datasets: Path = portal_roots / "datasets"
    assert f'placeholder="{datasets}/train.jsonl"' in page and f'placeholder="{datasets}/eval.jsonl"' in page
    assert "/data/datasets" not in page


# --- the DPO settings ---------------------------------------------------------------------------------------------


def test_a_wrong_dpo_value_does_not_block_an_sft_project_and_is_stored_as_its_default(
    alice, portal_roots, tiny_llama_in_cache
):
    """The DPO fieldset is hidden while the objective is SFT, and an SFT run never reads it: a wrong DPO value sent
    with an SFT project (by the form or the API, one service) is stored as its default; a valid one is kept."""
    from projects.hyperparameters import Hyperparameters

    client = secure_client(alice)
    sft = client.post("/projects/new/", form_data(portal_roots, tiny_llama_in_cache[0], dpo_beta="-3"))
    assert sft.status_code == 302, text(sft)
    assert TrainingProject.objects.get().hyperparameters["dpo_beta"] == Hyperparameters().dpo_beta
    kept = form_data(portal_roots, tiny_llama_in_cache[0], dpo_beta="0.3", name="kept")
    kept["output_directory"] = str(portal_roots / "outputs" / "kept")
    assert client.post("/projects/new/", kept).status_code == 302
    assert TrainingProject.objects.get(name="kept").hyperparameters["dpo_beta"] == 0.3
    # For a DPO project the same value is refused, under its box, and the banner links to it.
    dpo = form_data(portal_roots, tiny_llama_in_cache[0], dpo_beta="-3", objective="dpo", name="dpo")
    dpo["output_directory"] = str(portal_roots / "outputs" / "dpo")
    page = text(client.post("/projects/new/", dpo))
    assert not TrainingProject.objects.filter(name="dpo").exists()
    assert errors_under(page, "dpo_beta") and '<a href="#id_dpo_beta">DPO beta</a>' in page
