"""A separate eval file: checked at save like the dataset (paths, rows, fields, uploads) on the form and the API
with each problem under `eval_dataset_path`, never together with eval_fraction nor for DPO, and one real run on a
real worker that evaluates on the file's rows and records the file's sha256 in its settings."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape
from pydantic import ValidationError

from mtm.shared.files import file_sha256
from projects.datasets.eval_split import describe_eval_file, eval_source_problems
from projects.models import RunStatus, TrainingProject, TrainingRun
from projects.runs.config import RunConfig, config_rows
from projects.runs.evaluation import eval_overview
from projects.trainer.errors import TrainerError
from projects.trainer.spec import TrainerSpec, read_spec, spec_problem, write_spec
from tests.api_client import API, call, codes, make_user_token
from tests.clients import form_data, secure_client
from tests.pipeline_helpers import FAST_HYPERPARAMETERS, QA_ROWS, write_jsonl
from tests.trained_runs import EVAL_ROWS, copy_trained_run

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def roots(portal_roots) -> Path:
    return portal_roots


@pytest.fixture
def eval_file(roots) -> Path:
    return write_jsonl(roots / "datasets" / "eval.jsonl", EVAL_ROWS)


def _bad_eval_file(roots: Path, kind: str) -> tuple[str, str]:
    """(the path to give, a part of the message that names what is wrong)."""
    datasets = roots / "datasets"
    if kind == "missing":
        return str(datasets / "nope.jsonl"), "does not exist"
    if kind == "outside roots":
        outside = write_jsonl(roots / "elsewhere" / "eval.jsonl", EVAL_ROWS)
        return str(outside), "outside the allowed dataset roots"
    if kind == "link out of the roots":
        outside = write_jsonl(roots / "elsewhere" / "linked.jsonl", EVAL_ROWS)
        (datasets / "link.jsonl").symlink_to(outside)
        return str(datasets / "link.jsonl"), "outside the allowed dataset roots"
    if kind == "wrong fields":
        return str(write_jsonl(datasets / "fields.jsonl", [{"question": "a", "reply": "b"}] * 3)), "question"
    (datasets / "empty.jsonl").write_text("")
    return str(datasets / "empty.jsonl"), "is empty"


BAD_KINDS = ["missing", "outside roots", "link out of the roots", "wrong fields", "empty"]


# --- the rule both sources follow -----------------------------------------------------------------------------


def test_an_eval_file_excludes_a_share_of_the_dataset_and_the_dpo_objective():
    assert eval_source_problems("sft", 0.0, "") == [] == eval_source_problems("sft", 0.2, "")
    assert eval_source_problems("sft", 0.0, "/d/eval.jsonl") == []
    both = eval_source_problems("sft", 0.1, "/d/eval.jsonl")
    assert codes([p.model_dump() for p in both]) == ["eval_source_conflict"]
    assert "eval_fraction = 0.1" in both[0].message and "Choose one" in both[0].hint
    dpo = eval_source_problems("dpo", 0.0, "/d/eval.jsonl")
    assert codes([p.model_dump() for p in dpo]) == ["invalid_eval_source"] and "preference_pairs" in dpo[0].hint
    assert describe_eval_file("/d/eval.jsonl", 5) == "separate file /d/eval.jsonl, 5 rows"


def test_the_trainer_spec_carries_the_eval_file_and_refuses_it_with_a_share(tmp_path, eval_file):
    data = write_jsonl(tmp_path / "train.jsonl", QA_ROWS)
    (tmp_path / "model").mkdir()
    common = {"model_path": tmp_path / "model", "model_name": "t/m", "dataset_path": data, "output_dir": tmp_path}
    spec = read_spec(write_spec(TrainerSpec(**common, eval_dataset_path=eval_file), tmp_path / "spec.json"))
    assert spec.eval_dataset_path == eval_file
    assert read_spec(write_spec(TrainerSpec(**common), tmp_path / "spec.json")).eval_dataset_path is None
    conflicting = TrainerSpec(**common).model_dump(mode="json")
    conflicting.update(eval_dataset_path=str(eval_file), hyperparameters={"eval_fraction": 0.1})
    (tmp_path / "spec.json").write_text(json.dumps(conflicting))
    with pytest.raises(TrainerError) as refused:
        read_spec(tmp_path / "spec.json")
    assert refused.value.code == "eval_source_conflict"
    with pytest.raises(ValidationError) as refused_here:  # the supervisor cannot build such a spec either
        TrainerSpec(**common, eval_dataset_path=eval_file, hyperparameters={"eval_fraction": 0.1})
    assert spec_problem(refused_here.value).code == "eval_source_conflict"


# --- the form ---------------------------------------------------------------------------------------------------


def _form(roots: Path, model_name: str, **changes) -> dict:
    return form_data(roots, model_name, max_seq_length="32", **changes)


def _eval_field(html: str) -> str:
    start = html.index('id="eval-dataset-field"')
    return html[start : html.index('id="eval-dataset-status"', start)]


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_the_form_refuses_a_bad_eval_file_under_its_box(owner, roots, tiny_llama_in_cache, kind):
    path, what = _bad_eval_file(roots, kind)
    response = secure_client(owner).post("/projects/new/", _form(roots, tiny_llama_in_cache[0], eval_dataset_path=path))
    assert response.status_code == 422
    html = response.content.decode()
    assert "The project was not saved" in html
    assert escape(what) in _eval_field(html)
    assert 'id="dataset-field" class="field dataset-field"' in html  # the dataset itself is fine: no error there
    assert not TrainingProject.objects.exists()


def test_the_form_refuses_both_eval_sources_and_saves_a_good_eval_file(owner, roots, tiny_llama_in_cache, eval_file):
    client = secure_client(owner)
    both = _form(roots, tiny_llama_in_cache[0], eval_dataset_path=str(eval_file), eval_fraction="0.2")
    response = client.post("/projects/new/", both)
    assert response.status_code == 422
    field = _eval_field(response.content.decode())
    assert "Two eval sets are chosen" in field and "set eval_fraction to 0" in field
    # The share's box is in a folded section: the error opens that section and stands there too.
    page = response.content.decode()
    section = page.split('<details class="more" open>')[1].split("</details>")[0]
    assert 'id="id_eval_fraction"' in section and "Two eval sets are chosen" in section
    assert not TrainingProject.objects.exists()

    response = client.post("/projects/new/", {**both, "eval_fraction": "0"})
    assert response.status_code == 302, _eval_field(response.content.decode())
    project = TrainingProject.objects.get()
    assert project.eval_dataset_path == str(eval_file) and project.eval_dataset_sha256 == file_sha256(eval_file)
    detail = client.get(f"/projects/{project.pk}/").content.decode()
    assert "separate file" in detail and str(eval_file) in detail
    assert "no eval set" not in detail and "0 (none held out)" in detail  # the share beside the file said "no eval set"
    edit = client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert f'value="{eval_file}"' in _eval_field(edit)
    # Cleared on the edit form: no eval file, and the page says the share of the dataset instead
    response = client.post(f"/projects/{project.pk}/edit/", {**both, "eval_dataset_path": "", "eval_fraction": "0.2"})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.eval_dataset_path == "" == project.eval_dataset_sha256
    assert "20% of the rows, picked with seed 42" in client.get(f"/projects/{project.pk}/").content.decode()


def test_the_eval_file_is_checked_as_you_type(owner, roots, tiny_llama_in_cache, eval_file):
    client = secure_client(owner)
    params = {"eval_dataset_path": str(eval_file), "model_name": tiny_llama_in_cache[0], "max_seq_length": "32"}
    html = client.get("/projects/check-eval-dataset/", params, **HX).content.decode()
    assert "5 rows</strong>" in html and "prompt_completion" in html and "Say goodbye:" in html
    noted = client.get("/projects/check-eval-dataset/", {**params, "eval_fraction": "0.1"}, **HX).content.decode()
    assert "Two eval sets are chosen" in noted
    outside = client.get("/projects/check-eval-dataset/", {"eval_dataset_path": "/etc/passwd"}, **HX)
    assert "is outside the allowed dataset roots" in outside.content.decode()


def test_doubtful_eval_settings_the_hostile_tester_saved_without_a_word(owner, roots, tiny_llama_in_cache):
    """keep_best_eval with no eval set was accepted and silently ignored; the training file given as the eval file,
    or an eval file of another format, were accepted without a word."""
    from projects.services import check_project

    name, dataset = tiny_llama_in_cache[0], str(roots / "datasets" / "qa.jsonl")
    # 1. keep_best_eval with nothing to judge by: refused, under its box on the form (opening its section).
    response = secure_client(owner).post("/projects/new/", _form(roots, name, keep_best_eval="on"))
    assert response.status_code == 422
    section = response.content.decode().split('<details class="more" open>')[1].split("</details>")[0]
    assert "no eval set to judge the checkpoints by" in section
    api = check_project(_body(roots, name, hyperparameters={"keep_best_eval": True}), user=owner)
    assert codes([p.model_dump() for p in api.errors["hyperparameters"]]) == ["keep_best_without_eval_set"]
    # 2. the training file as the eval file: saved, with a warning in the eval file's report and as you type.
    same = check_project(_body(roots, name, eval_dataset_path=dataset), user=owner)
    assert same.valid and [w.code for w in same.warnings["eval_dataset_path"]] == ["eval_file_is_the_dataset"]
    assert "eval_file_is_the_dataset" in [w.code for w in same.eval_dataset.warnings]
    params = {"eval_dataset_path": dataset, "dataset_path": dataset, "model_name": name, "max_seq_length": "32"}
    typed = secure_client(owner).get("/projects/check-eval-dataset/", params, **HX).content.decode()
    assert "is the training dataset itself" in typed
    # 3. an eval file of another format than the dataset's.
    text_file = write_jsonl(roots / "datasets" / "eval-text.jsonl", [{"text": "Say hello: hello"}] * 3)
    other = check_project(_body(roots, name, eval_dataset_path=str(text_file)), user=owner)
    assert other.valid and [w.code for w in other.warnings["eval_dataset_path"]] == ["eval_file_format_differs"]


# --- the API ----------------------------------------------------------------------------------------------------


def _body(roots: Path, model_name: str, **changes) -> dict:
    return {
        "name": "demo",
        "model_name": model_name,
        "dataset_path": str(roots / "datasets" / "qa.jsonl"),
        "output_directory": str(roots / "outputs" / "demo"),
        "hyperparameters": {"max_steps": 5, "max_seq_length": 32},
        **changes,
    }


def _field_problems(response, field: str) -> list[dict]:
    assert response.status_code == 422, response.content
    return [p for p in response.json()["errors"] if p["field"] == field]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_the_api_refuses_a_bad_eval_file_naming_the_field(client, roots, tiny_llama_in_cache, kind):
    _, token = make_user_token("owner")
    path, what = _bad_eval_file(roots, kind)
    response = call(client, "post", "/projects", _body(roots, tiny_llama_in_cache[0], eval_dataset_path=path), token)
    problems = _field_problems(response, "eval_dataset_path")
    assert problems and what in problems[0]["message"], problems
    assert all(p["field"] == "eval_dataset_path" for p in response.json()["errors"])
    assert not TrainingProject.objects.exists()


def test_the_api_stores_the_eval_file_refuses_both_sources_dpo_and_anothers_upload(
    client, roots, tiny_llama_in_cache, eval_file
):
    name = tiny_llama_in_cache[0]
    _, token = make_user_token("owner")
    both = _body(roots, name, eval_dataset_path=str(eval_file), hyperparameters={"eval_fraction": 0.1})
    assert codes(_field_problems(call(client, "post", "/projects", both, token), "eval_dataset_path")) == [
        "eval_source_conflict"
    ]
    dpo = _body(roots, name, eval_dataset_path=str(eval_file), hyperparameters={"objective": "dpo"})
    assert "invalid_eval_source" in codes(
        _field_problems(call(client, "post", "/projects", dpo, token), "eval_dataset_path")
    )

    created = call(client, "post", "/projects", _body(roots, name, eval_dataset_path=str(eval_file)), token)
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["eval_dataset_path"] == str(eval_file) and body["eval_dataset_sha256"] == file_sha256(eval_file)
    pk = body["id"]

    # Another member's upload is theirs, as a dataset and as an eval file
    _, other = make_user_token("other")
    uploaded = client.post(
        API + "/datasets",
        {"file": SimpleUploadedFile("eval.jsonl", eval_file.read_bytes())},
        secure=True,
        headers={"Authorization": f"Bearer {other}"},
    )
    assert uploaded.status_code == 200, uploaded.content
    theirs = uploaded.json()["dataset_path"]
    patched = call(client, "patch", f"/projects/{pk}", {"eval_dataset_path": theirs}, token)
    assert codes(_field_problems(patched, "eval_dataset_path")) == ["upload_not_yours"]

    cleared = call(client, "patch", f"/projects/{pk}", {"eval_dataset_path": ""}, token)
    assert cleared.status_code == 200 and cleared.json()["eval_dataset_path"] is None
    schema = call(client, "get", "/openapi.json").json()["components"]["schemas"]
    assert (
        "eval_dataset_path" in schema["ProjectIn"]["properties"]
        and "eval_dataset_path" in schema["ProjectPatch"]["properties"]
    )


def test_an_upload_used_as_an_eval_file_is_kept_and_only_its_owner_may_start_on_it(
    client, roots, tiny_llama_in_cache, settings
):
    from mtm.audit import Actor, Channel
    from projects.datasets.uploads import cleanup_uploads
    from projects.runs.services import RunRefused, start_run

    owner, token = make_user_token("owner")
    uploaded = client.post(
        API + "/datasets",
        {"file": SimpleUploadedFile("eval.jsonl", "".join(json.dumps(r) + "\n" for r in EVAL_ROWS).encode())},
        secure=True,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert uploaded.status_code == 200, uploaded.content
    stored = uploaded.json()["dataset_path"]
    created = call(client, "post", "/projects", _body(roots, tiny_llama_in_cache[0], eval_dataset_path=stored), token)
    assert created.status_code == 201, created.content
    # Long past the grace period, the periodic cleanup keeps a file a project evaluates on
    assert stored not in cleanup_uploads(now=time.time() + 3600 * (settings.MTM_UPLOAD_GRACE_HOURS + 1))
    assert Path(stored).is_file()
    # Set on the project by someone else (as staff may), it is still its owner's: another member cannot start on it
    member, _ = make_user_token("member")
    project = TrainingProject.objects.get()
    project.owner = member
    project.save()
    with pytest.raises(RunRefused) as refused:
        start_run(project, actor=Actor(member, Channel.CLI))
    assert refused.value.problem.code == "upload_not_yours" and stored in refused.value.problem.message


def test_a_runs_settings_and_overview_state_the_eval_file(owner, roots, eval_file):
    project = TrainingProject.objects.create(
        name="p", owner=owner, model_name="t/m", dataset_path=str(roots / "datasets" / "qa.jsonl"),
        eval_dataset_path=str(eval_file), eval_dataset_sha256="ab" * 32, output_directory=str(roots / "outputs" / "p"),
        hyperparameters={"eval_steps": 3},
    )  # fmt: skip
    config = RunConfig.of_project(project)
    assert config.eval_dataset_path == str(eval_file) and config.eval_dataset_sha256 == "ab" * 32
    config.eval_dataset_rows = 5
    run = TrainingRun.objects.create(project=project, config=config.model_dump())
    overview = eval_overview(run)
    assert overview.enabled and overview.source == "file" and overview.eval_rows == 5
    assert overview.split == f"separate file {eval_file}, 5 rows"
    rows = {row.key: row.value for row in config_rows(run)}
    assert rows["eval_dataset_path"] == str(eval_file) and rows["eval_dataset_sha256"] == "ab" * 32
    plain = TrainingRun.objects.create(project=project, config={**config.model_dump(), "eval_dataset_path": ""})
    assert eval_overview(plain).source == "none" and not eval_overview(plain).enabled


# --- one real run on a real worker ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_evaluates_on_the_eval_file_and_records_its_sha256(
    portal_roots, db, tiny_llama_in_cache, trained_lora_run
):
    """The session's LoRA run (tests.trained_runs.LORA), trained by a real worker on these files with these
    settings, copied as alice's run."""
    assert trained_lora_run.project["hyperparameters"] == {
        **FAST_HYPERPARAMETERS, "max_steps": 8, "save_steps": 4, "eval_steps": 4, "eval_prompts": 2,
        "keep_best_eval": True, "learning_rate": 0.02,
    }  # fmt: skip
    user = User.objects.create_user("alice", password="x")
    write_jsonl(portal_roots / "datasets" / "train.jsonl", QA_ROWS * 8)  # 24 rows
    eval_path = write_jsonl(portal_roots / "datasets" / "eval" / "train.jsonl", EVAL_ROWS)  # same name, other folder
    run = copy_trained_run(trained_lora_run, user, portal_roots)
    assert run.status == RunStatus.SUCCEEDED, (run.error_message, run.log_tail[-3000:])

    # The settings record the file and the digest of what the trainer read
    assert run.config["eval_dataset_path"] == str(eval_path)
    assert run.config["eval_dataset_sha256"] == file_sha256(eval_path) and run.config["eval_dataset_rows"] == 5
    # Every dataset row trained but the validation prompt's (no share held out); the file's five rows were
    # evaluated, at steps 4 and 8
    manifest = json.loads((Path(run.run_folder) / "mtm_manifest.json").read_text())
    assert manifest["dataset"]["eval_rows"] == 5 and manifest["dataset"]["eval_source"] == "file"
    assert manifest["dataset"]["examples"] == 23 and manifest["dataset"]["held_out_rows"] == 1  # the prompt's row
    assert manifest["eval_dataset"]["sha256"] == file_sha256(eval_path)  # the run's snapshot of the file
    assert manifest["eval_dataset"]["path"].endswith("/eval-dataset/train.jsonl")
    evals = [point for point in run.metrics if "eval_loss" in point]
    assert [point["step"] for point in evals] == [4, 8]
    assert run.summary["eval_loss"] == evals[-1]["eval_loss"]
    assert run.summary["result_step"] == run.summary["best_eval_step"]  # keep_best_eval works with the file too
    # The validation compared base and fine-tuned on the file's rows: its answers are the references
    before_after = run.validation["before_after"]
    assert before_after["eval_rows"] == 5 and before_after["tuned_eval_loss"] is not None
    references = {row["prompt"]: row["completion"] for row in EVAL_ROWS}
    assert [pair["reference"] for pair in before_after["pairs"]] == [
        references[p["prompt"]] for p in before_after["pairs"]
    ]

    page = secure_client(user).get(f"/projects/runs/{run.pk}/").content.decode()
    assert f"separate file {eval_path}, 5 rows" in page and "rows of the eval file" in page
    assert file_sha256(eval_path) in page  # the settings panel
