"""The demo model `make run` builds has random weights, so it answers with random words: its page, the playground's
list and a conversation with it (or with a run fine-tuned from it) say so, and a real model's do not."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from models_registry.demo import DEMO_MODEL_NAME, install_into_cache
from playground.models import Conversation, TargetKind
from projects.models import TrainingProject, TrainingRun
from tests.clients import secure_client

SAID = "is the untrained demo model"


@pytest.fixture
def member(portal_roots, hf_cache, tiny_llama_in_cache, tiny_llama_dir) -> User:
    """A member of a portal whose cache holds the demo model (the tiny Llama under its name) and a real one."""
    install_into_cache(tiny_llama_dir, hf_cache, DEMO_MODEL_NAME)
    return User.objects.create_user("dana")


def page(user: User, url: str) -> str:
    response = secure_client(user).get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_the_demo_models_page_says_it_is_untrained_and_a_real_models_does_not(member, tiny_llama_in_cache):
    demo = page(member, reverse("registry:model-detail", kwargs={"name": DEMO_MODEL_NAME}))
    assert SAID in demo and "random words" in demo
    real = page(member, reverse("registry:model-detail", kwargs={"name": tiny_llama_in_cache[0]}))
    assert SAID not in real


def test_the_playground_says_the_demo_model_answers_random_words(member, tiny_llama_in_cache):
    listed = page(member, reverse("playground:index"))
    assert f"{DEMO_MODEL_NAME} (cache, untrained demo: random answers)" in listed
    assert f"{tiny_llama_in_cache[0]} (cache)</option>" in listed
    demo = Conversation.objects.create(owner=member, kind=TargetKind.MODEL, model_name=DEMO_MODEL_NAME)
    real = Conversation.objects.create(owner=member, kind=TargetKind.MODEL, model_name=tiny_llama_in_cache[0])
    assert SAID in page(member, reverse("playground:conversation", kwargs={"pk": demo.pk}))
    assert SAID not in page(member, reverse("playground:conversation", kwargs={"pk": real.pk}))


def test_a_conversation_with_a_run_fine_tuned_from_the_demo_model_says_so(member, portal_roots):
    project = TrainingProject.objects.create(
        name="demo-run", owner=member, model_name=DEMO_MODEL_NAME, output_directory=str(portal_roots / "outputs" / "d")
    )
    run = TrainingRun.objects.create(project=project)
    chat = Conversation.objects.create(owner=member, kind=TargetKind.RUN, run=run, model_name=DEMO_MODEL_NAME)
    shown = page(member, reverse("playground:conversation", kwargs={"pk": chat.pk}))
    assert f"Run #{run.pk} was fine-tuned from the demo model." in shown and SAID in shown


def test_a_run_fine_tuned_from_the_demo_model_says_so_on_its_page(member, portal_roots, tiny_llama_in_cache):
    demo_project = TrainingProject.objects.create(
        name="demo-run", owner=member, model_name=DEMO_MODEL_NAME, output_directory=str(portal_roots / "outputs" / "d")
    )
    demo_run = TrainingRun.objects.create(project=demo_project, validation={"passed": True, "checks": []})
    shown = page(member, reverse("projects:run", kwargs={"pk": demo_run.pk}))
    assert f"Run #{demo_run.pk} is fine-tuned from the demo model." in shown and SAID in shown
    assert "Expected here: the base model is the untrained demo" in shown
    real_project = TrainingProject.objects.create(
        name="real-run", owner=member, model_name=tiny_llama_in_cache[0], output_directory=str(portal_roots / "o" / "r")
    )
    real_run = TrainingRun.objects.create(project=real_project, validation={"passed": True, "checks": []})
    assert SAID not in page(member, reverse("projects:run", kwargs={"pk": real_run.pk}))


def test_the_models_list_and_the_home_page_flag_the_demo_model(member, tiny_llama_in_cache):
    listed = page(member, reverse("registry:models"))
    assert listed.count("demo · random weights") == 1
    home = page(member, reverse("home"))
    assert "One of them is the untrained demo model" in home


def test_the_home_page_says_when_the_demo_is_the_only_model(portal_roots, hf_cache, tiny_llama_dir):
    install_into_cache(tiny_llama_dir, hf_cache, DEMO_MODEL_NAME)
    home = page(User.objects.create_user("erin"), reverse("home"))
    assert "The only one is the untrained demo model" in home
