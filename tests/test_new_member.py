"""A new member's first run: "Train this model" on a model's page opens a new project with that model, an output
directory of its own inside the allowed root, and the quick-check preset one click away."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from projects.hyperparameters import QUICK_CHECK, Hyperparameters
from projects.models import TrainingProject
from tests.clients import secure_client
from tests.token_counts import counted

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(db) -> User:
    return User.objects.create_user("newcomer", password="newcomer-pass-1234")


def box(html: str, name: str) -> str:
    """The value attribute of the form's input named `name`."""
    start = html.index(f'name="{name}"')
    tag = html[html.rindex("<input", 0, start) : html.index(">", start)]
    return tag.split('value="', 1)[1].split('"', 1)[0] if 'value="' in tag else ""


def test_train_this_model_opens_a_prefilled_form(member, portal_roots, tiny_llama_in_cache):
    name = tiny_llama_in_cache[0]
    client = secure_client(member)
    model_page = client.get(f"/models/{name}/").content.decode()
    assert f'href="/projects/new/?model={name}">Train this model</a>' in model_page
    form = client.get("/projects/new/", {"model": name}).content.decode()
    assert box(form, "model_name") == name
    assert box(form, "output_directory") == str(portal_roots / "outputs" / "tiny-llama")
    (portal_roots / "outputs" / "tiny-llama").mkdir()  # taken: the next free name is offered
    TrainingProject.objects.create(
        name="x",
        owner=member,
        model_name=name,
        dataset_path="/d",
        output_directory=str(portal_roots / "outputs" / "tiny-llama-2"),
    )
    form = client.get("/projects/new/", {"model": name}).content.decode()
    assert box(form, "output_directory") == str(portal_roots / "outputs" / "tiny-llama-3")
    assert box(client.get("/projects/new/").content.decode(), "output_directory") == str(
        portal_roots / "outputs" / "my-project"
    )


def test_the_quick_check_preset_fills_few_logged_steps(member, portal_roots):
    client = secure_client(member)
    plain = client.get("/projects/new/").content.decode()
    assert "Use the quick-check preset" in plain
    assert box(plain, "max_steps") == str(Hyperparameters().max_steps)
    quick = client.get("/projects/new/", {"preset": "quick"}).content.decode()
    for name, value in QUICK_CHECK.items():
        assert box(quick, name) == str(value), name
    assert Hyperparameters.from_dict(QUICK_CHECK)[1] == []  # the preset is itself valid


def test_the_forms_dataset_check_applies_the_chosen_chat_template(member, portal_roots, hf_cache, tmp_path):
    import json

    from models_registry.demo import build_tiny_llama, install_into_cache

    install_into_cache(build_tiny_llama(tmp_path / "base", chat_template=False), hf_cache, "test-org/tiny-base")
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}] * 3
    path = portal_roots / "datasets" / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    client = secure_client(member)
    query = {"dataset_path": str(path), "model_name": "test-org/tiny-base", "max_seq_length": "64"}
    own = client.get("/projects/check-dataset/", query).content.decode()
    assert "has no chat template" in counted(client, own, path, member)  # the worker renders the template
    chatml = client.get("/projects/check-dataset/", {**query, "chat_template": "chatml"}).content.decode()
    chatml = counted(client, chatml, path, member)
    assert "has no chat template" not in chatml and "3 rows" in chatml and "token-stats" in chatml


def test_the_form_offers_the_sample_dataset_when_it_is_there(member, portal_roots):
    from projects.datasets.samples import write_sample_dataset

    client = secure_client(member)
    assert "Use the sample dataset" not in client.get("/projects/new/").content.decode()
    sample, _ = write_sample_dataset(portal_roots / "datasets")
    form = client.get("/projects/new/", {"model": "test-org/tiny-llama", "preset": "quick"}).content.decode()
    assert 'name="starter" value="sample"' in form and "Use the sample dataset" in form
    chosen = client.get("/projects/new/", {"model": "test-org/tiny-llama", "dataset": "sample"}).content.decode()
    assert box(chosen, "dataset_path") == str(sample)
    assert 'name="starter" value="quick"' in chosen and "Use the quick-check preset" in chosen
    assert box(chosen, "max_steps") != str(QUICK_CHECK["max_steps"])  # the preset is only applied when chosen


def test_the_starter_buttons_keep_what_was_typed(member, portal_roots):
    """The "Use the quick-check preset" and "Use the sample dataset" buttons post the form as typed so far: the page
    that comes back keeps the name, the model and the objective, and adds the preset or the sample's path."""
    from projects.datasets.samples import write_sample_dataset

    sample, _ = write_sample_dataset(portal_roots / "datasets")
    client = secure_client(member)
    typed = {
        "name": "My first run",
        "model_name": "test-org/tiny-llama",
        "objective": "sft",
        "method": "full",
        "learning_rate": "0.0003",
        "packing": "on",
        "output_directory": "",
    }
    quick = client.post("/projects/new/", {**typed, "starter": "quick"})
    assert quick.status_code == 200
    page = quick.content.decode()
    assert box(page, "name") == "My first run" and box(page, "model_name") == "test-org/tiny-llama"
    assert box(page, "learning_rate") == "0.0003" and box(page, "max_steps") == str(QUICK_CHECK["max_steps"])
    assert re.search(r'name="method" value="full"[^>]*checked', page)
    assert box(page, "output_directory").startswith(str(portal_roots))  # a blank folder gets a free one
    assert "Quick-check preset applied" in page
    assert not TrainingProject.objects.exists()  # nothing is saved by a starter button
    sample_page = client.post("/projects/new/", {**typed, "starter": "sample"}).content.decode()
    assert box(sample_page, "dataset_path") == str(sample) and box(sample_page, "name") == "My first run"
    assert box(sample_page, "learning_rate") == "0.0003"
