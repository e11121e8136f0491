"""The hostile pass's smaller findings: a hard link to another member's upload used as one's own dataset, LoRA
target modules the model does not have, control characters in a playground stop string, and a plural of a reserved
organisation in a published name. Each is refused with what is wrong, where, and what to do; never a 500."""

from __future__ import annotations

import html
import importlib
import os
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.core.files.uploadedfile import SimpleUploadedFile

from models_registry.published import organisation_problem
from mtm.audit import Actor
from playground.models import Conversation, Generation, TargetKind
from playground.params import GenerationParams
from projects.datasets import check_dataset_path
from projects.datasets.uploads import NOT_YOURS, receive_upload
from projects.lora_targets import UNKNOWN_TARGETS
from projects.models import TrainingProject, TrainingRun
from projects.runs.paths import dataset_problem
from projects.services import ProjectInvalid, create_project
from tests.api_client import call, make_user_token
from tests.clients import form_data, secure_client
from tests.test_owned_paths import QA_BYTES, fields


def as_(user) -> Actor:
    return Actor.command_line(user)


def errors_of(excinfo: pytest.ExceptionInfo[ProjectInvalid], field: str):
    return excinfo.value.check.errors.get(field, [])


# --- a hard link to another member's upload ---------------------------------------------------------------------


def alices_upload(team) -> Path:
    return Path(receive_upload(as_(team["alice"]), SimpleUploadedFile("qa.jsonl", QA_BYTES), "qa.jsonl").path)


def test_a_hard_link_to_another_members_upload_is_not_hers(team, tiny_llama_in_cache):
    """Uploads are readable by everyone on the server, so a member with a shell can link one into a dataset root she
    may write in. That file is Alice's upload under another name: only Alice and staff may train on it."""
    upload = alices_upload(team)
    linked = team["root"] / "datasets" / "mine.jsonl"
    os.link(upload, linked)
    data = fields(team["root"], tiny_llama_in_cache[0], name="mallory's", dataset_path=str(linked))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["mallory"]), data=data)
    [problem] = errors_of(refused, "dataset_path")
    assert problem.code == NOT_YOURS
    assert "hard link" in problem.message and str(upload) in problem.message and "alice uploaded" in problem.message
    assert "Upload your own copy" in problem.hint
    eval_data = {**fields(team["root"], tiny_llama_in_cache[0], name="eval"), "eval_dataset_path": str(linked)}
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["mallory"]), data=eval_data)
    assert [p.code for p in errors_of(refused, "eval_dataset_path")] == [NOT_YOURS]
    assert not TrainingProject.objects.exists()
    own = {**data, "name": "alice's", "output_directory": str(team["root"] / "outputs" / "alice")}
    assert create_project(actor=as_(team["alice"]), data=own).dataset_path == str(linked)  # hers under any name
    staff = {**data, "name": "staff's", "output_directory": str(team["root"] / "outputs" / "staff")}
    assert create_project(actor=as_(team["staff"]), data=staff).dataset_path == str(linked)


def test_a_file_swapped_for_a_hard_link_after_the_save_is_refused_at_training(team, tiny_llama_in_cache):
    """Mallory saves a file of her own, then puts a hard link of Alice's upload in its place: the train stage's
    check of the dataset refuses to read it."""
    upload = alices_upload(team)
    hers = team["root"] / "datasets" / "mine.jsonl"
    hers.write_bytes(QA_BYTES)
    data = fields(team["root"], tiny_llama_in_cache[0], name="mallory's", dataset_path=str(hers))
    project = create_project(actor=as_(team["mallory"]), data=data)
    run = TrainingRun.objects.create(project=project, started_by=team["mallory"])
    assert dataset_problem(run, str(hers)) is None
    hers.unlink()
    os.link(upload, hers)
    problem = dataset_problem(run, str(hers))
    assert problem is not None and problem.code == NOT_YOURS and "alice uploaded" in problem.message
    assert check_dataset_path(str(hers), [str(team["root"] / "datasets")]).valid  # the file itself is fine


def test_a_file_with_other_names_that_are_no_upload_is_used_as_before(team, tiny_llama_in_cache):
    own = team["root"] / "datasets" / "mine.jsonl"
    own.write_bytes(QA_BYTES)
    os.link(own, team["root"] / "datasets" / "also-mine.jsonl")
    data = fields(team["root"], tiny_llama_in_cache[0], name="mallory's", dataset_path=str(own))
    assert create_project(actor=as_(team["mallory"]), data=data).dataset_path == str(own)


# --- LoRA target modules the model does not have ----------------------------------------------------------------


def lora_project(team, model: str, targets, method: str = "lora") -> dict:
    data = fields(team["root"], model, name="targets", method=method)
    data["hyperparameters"] = {**data["hyperparameters"], "lora_target_modules": targets}
    return data


def test_lora_targets_the_model_does_not_have_are_refused_at_save(team, tiny_llama_in_cache):
    model = tiny_llama_in_cache[0]
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["alice"]), data=lora_project(team, model, ["q_proj", "qkv_proj", "c_attn"]))
    [problem] = errors_of(refused, "hyperparameters")
    assert problem.code == UNKNOWN_TARGETS
    assert "'qkv_proj', 'c_attn'" in problem.message and f"'{model}'" in problem.message
    assert "'q_proj'," not in problem.message  # the one that exists is not named as missing
    assert "peft would skip it silently and wrap only the others" in problem.message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert name in problem.hint
    assert "input_layernorm" not in problem.hint
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=as_(team["alice"]), data=lora_project(team, model, ["input_layernorm"]))
    [problem] = errors_of(refused, "hyperparameters")
    assert "normalisation layer, which LoRA cannot wrap" in problem.message
    assert "training would stop at its start (peft finds no layer to wrap)" in problem.message
    with pytest.raises(ProjectInvalid) as refused:  # peft matches the whole dotted name, not only its last part
        create_project(actor=as_(team["alice"]), data=lora_project(team, model, ["mlp.q_proj"]))
    [problem] = errors_of(refused, "hyperparameters")
    assert "'mlp.q_proj'" in problem.message
    assert not TrainingProject.objects.exists()


@pytest.mark.parametrize(
    ("targets", "method"),
    [
        (["q_proj", "v_proj"], "lora"),
        (["self_attn.q_proj", "mlp.down_proj"], "lora"),
        ("all-linear", "lora"),
        (["no_such_layer"], "full"),
    ],
    ids=["names", "dotted-names", "all-linear", "full-fine-tune-ignores-them"],
)
def test_lora_targets_the_model_has_are_accepted(team, tiny_llama_in_cache, targets, method):
    project = create_project(actor=as_(team["alice"]), data=lora_project(team, tiny_llama_in_cache[0], targets, method))
    assert project.method == method


def test_the_form_shows_unknown_lora_targets_under_their_box(portal_roots, tiny_llama_in_cache, team):
    posted = form_data(portal_roots, tiny_llama_in_cache[0], lora_target_modules="q_proj, wq")
    response = secure_client(team["alice"]).post("/projects/new/", posted)
    assert response.status_code == 422
    page = html.unescape(response.content.decode())
    box = page[page.index('for="id_lora_target_modules"') :]
    assert "names 'wq', which no layer of" in box[: box.index("</div>")]
    api = call(
        secure_client(),
        "post",
        "/projects",
        lora_project(team, tiny_llama_in_cache[0], ["wq"]),
        make_user_token("bob")[1],
    )
    assert api.status_code == 422
    assert [(e["field"], e["code"]) for e in api.json()["errors"]] == [("hyperparameters", UNKNOWN_TARGETS)]


# --- control characters in a playground stop string -------------------------------------------------------------


@pytest.fixture
def chat(db, tiny_llama_in_cache):
    """Carol's conversation with the tiny Llama, and her API token (no worker: a refused message never needs one)."""
    carol, token = make_user_token("carol")
    conversation = Conversation.objects.create(owner=carol, kind=TargetKind.MODEL, model_name=tiny_llama_in_cache[0])
    return conversation, token


@pytest.mark.parametrize(
    ("stop", "said"),
    [("a\x00b", "NUL"), ("\x07", "U+0007"), ("end\x1b[0m", "U+001B"), ("\x7f", "U+007F"), ("\x85", "U+0085")],
    ids=["nul", "bell", "escape", "delete", "c1-next-line"],
)
def test_a_control_character_in_a_stop_string_is_refused_by_the_api(chat, stop, said):
    conversation, token = chat
    path = f"/playground/conversations/{conversation.pk}/messages"
    response = call(secure_client(), "post", path, {"message": "hi", "stop": ["ok", stop]}, token)
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert "stop string 2" in error["message"] and said in error["message"], error
    assert not Generation.objects.exists()


def test_a_control_character_in_a_stop_string_is_refused_by_the_page(chat):
    conversation, _ = chat
    client = secure_client(conversation.owner)
    response = client.post(
        f"/playground/{conversation.pk}/send/", {"message": "hi", "stop": "ok\n\\x00\nbell\x01"}, follow=True
    )
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "stop string 2" in page and "NUL character" in page
    assert not Generation.objects.exists()


def test_tabs_and_line_breaks_stay_allowed_in_stop_strings():
    assert GenerationParams(stop=["\n\n", "\t", "\r\n", "User:"]).stop == ["\n\n", "\t", "\r\n", "User:"]


def test_an_answer_stored_before_the_refusal_reads_back_after_the_migration(chat):
    """A stop string with a control character saved before they were refused made reading the answer's parameters
    raise (a 500 on its conversation page); the migration drops those characters, and a string left empty."""
    conversation, _ = chat
    params = GenerationParams(stop=["ok"]).model_dump(mode="json")
    stored = Generation.objects.create(
        conversation=conversation, owner=conversation.owner, message="hi", params={**params, "stop": ["ok\x07", "\x1b"]}
    )
    with pytest.raises(ValueError):
        GenerationParams.model_validate(stored.params)
    importlib.import_module(
        "playground.migrations.0004_stop_strings_without_control_characters"
    ).drop_control_characters(django_apps, None)
    stored.refresh_from_db()
    assert GenerationParams.model_validate(stored.params).stop == ["ok"]
    response = secure_client(conversation.owner).get(f"/playground/{conversation.pk}/")
    assert response.status_code == 200


# --- plurals of reserved organisations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "organisation",
    [
        "admins",
        "officials",
        "mtms",
        "fbs",
        "hfs",
        "mss",
        "xais-org",
        "zais-org",
        "01s-ai",
        "baichuans-inc",
        "sentences-transformers",
        "lmstudios-community",
        "fbs-research",
    ],
)
def test_a_plural_of_a_reserved_organisation_is_refused(tmp_path, organisation):
    problem = organisation_problem(f"{organisation}/bot", tmp_path)
    assert problem is not None and problem.code == "organisation_reserved", organisation
    assert f"'{organisation}'" in problem.message


@pytest.mark.parametrize("organisation", ["team", "alice", "ml-team", "news-desk", "labs", "bob"])
def test_team_organisations_stay_allowed(tmp_path, organisation):
    assert organisation_problem(f"{organisation}/bot", tmp_path) is None
