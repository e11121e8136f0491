"""An output folder someone else made is never adopted: a member with a shell account of her own who creates a folder
at the path another member then saves (or a folder on its way) owns it, and could rename and replace whatever the
worker writes inside it. Only a folder of the portal's own user (the worker made it) or of root is taken; anyone
else's is refused with what to do. The suite runs as root, so another user's folder is made by chown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models_registry.lookup import validate_output_dir
from models_registry.outputs import FOREIGN_OWNER
from mtm.audit import Actor
from projects.models import TrainingProject
from projects.runs.paths import PathChanged, create_run_folder
from projects.services import ProjectInvalid, create_project, update_project
from tests.api_client import call, make_user_token
from tests.test_owned_paths import fields
from tests.test_run_folder_attacks import run_of

SHELL_UID = 12345  # a member's shell account: not the portal's user, not root


def made_by_another_user(folder: Path) -> Path:
    folder.mkdir(parents=True)
    os.chown(folder, SHELL_UID, SHELL_UID)
    return folder


def refusal(excinfo: pytest.ExceptionInfo[ProjectInvalid]):
    [problem] = excinfo.value.check.errors["output_directory"]
    return problem


@pytest.mark.parametrize("where", ["the-folder-itself", "a-folder-on-its-way"])
def test_a_folder_another_user_made_is_refused_at_save(team, tiny_llama_in_cache, where):
    outputs = team["root"] / "outputs"
    planted = made_by_another_user(outputs / "shared-name")
    target = planted if where == "the-folder-itself" else planted / "alices-project"
    data = fields(team["root"], tiny_llama_in_cache[0], name="alice's", output_directory=str(target))
    with pytest.raises(ProjectInvalid) as refused:
        create_project(actor=Actor.command_line(team["alice"]), data=data)
    problem = refusal(refused)
    assert problem.code == FOREIGN_OWNER
    assert f"uid {SHELL_UID}" in problem.message and str(planted) in problem.message
    assert "not to the portal's user" in problem.message
    assert "Pick a path that does not exist yet" in problem.hint and f"chown {os.geteuid()} {planted}" in problem.hint
    assert not TrainingProject.objects.exists()
    assert not any(planted.iterdir())  # nothing was written into it, not even the write probe


def test_the_api_and_the_folder_check_say_the_same(client, portal_roots, tiny_llama_in_cache):
    planted = made_by_another_user(portal_roots / "outputs" / "demo")
    _, token = make_user_token("alice")
    checked = call(client, "post", "/projects/validate-output-dir", {"output_directory": str(planted)}, token)
    assert checked.status_code == 200
    body = checked.json()
    assert body["valid"] is False and [e["code"] for e in body["errors"]] == [FOREIGN_OWNER]
    created = call(
        client, "post", "/projects", fields(portal_roots, tiny_llama_in_cache[0], output_directory=str(planted)), token
    )
    assert created.status_code == 422
    assert [(e["field"], e["code"]) for e in created.json()["errors"]] == [("output_directory", FOREIGN_OWNER)]


def test_a_folder_planted_after_the_save_is_refused_before_the_first_run(team, tiny_llama_in_cache):
    """Saved while nothing stood there; another member makes the folder before any run: the resolve stage's check
    (validate_output_dir) and the next save refuse it instead of the worker writing in it."""
    outputs = team["root"] / "outputs"
    data = fields(team["root"], tiny_llama_in_cache[0], name="alice's", output_directory=str(outputs / "alice"))
    project = create_project(actor=Actor.command_line(team["alice"]), data=data)
    made_by_another_user(outputs / "alice")
    assert [p.code for p in validate_output_dir(project.output_directory).errors] == [FOREIGN_OWNER]
    with pytest.raises(ProjectInvalid) as refused:
        update_project(project, {"description": "again"}, actor=Actor.command_line(team["alice"]))
    assert refusal(refused).code == FOREIGN_OWNER


def test_folders_of_the_portal_or_root_are_still_taken(team, tiny_llama_in_cache):
    """The portal's own folder (made by the worker) and one an administrator made as root are adopted as before; the
    allowed root itself may belong to anyone (staff chose it)."""
    outputs = team["root"] / "outputs"
    os.chown(outputs, SHELL_UID, SHELL_UID)  # the root: staff's choice of folder, whoever owns it
    ours = outputs / "ours"
    ours.mkdir()
    assert ours.stat().st_uid in {os.geteuid(), 0}
    data = fields(team["root"], tiny_llama_in_cache[0], name="alice's", output_directory=str(ours / "nested"))
    (ours / "nested").mkdir()
    project = create_project(actor=Actor.command_line(team["alice"]), data=data)
    assert project.output_directory == str(ours / "nested")


def test_a_folder_planted_after_the_resolve_check_is_refused_by_the_worker(team, tiny_llama_in_cache):
    """The last gap: made by another member after the resolve stage's check and before the worker makes the run's
    folder in it. The worker looks at the owner of the folder it opened, and makes nothing in it."""
    outputs = team["root"] / "outputs"
    data = fields(team["root"], tiny_llama_in_cache[0], name="alice's", output_directory=str(outputs / "alice"))
    project = create_project(actor=Actor.command_line(team["alice"]), data=data)
    run = run_of(project, team["alice"])
    planted = made_by_another_user(outputs / "alice")
    with pytest.raises(PathChanged) as refused:
        create_run_folder(run)
    assert refused.value.problem.code == FOREIGN_OWNER and f"uid {SHELL_UID}" in refused.value.problem.message
    assert not any(planted.iterdir())
