"""What fills transformers' verdict and what it holds: the background fill asks the workers for the listed models'
checks a bounded batch at a time, never twice for one snapshot, and real workers fill a new cache to the end; the
check renders the model's own chat template; the resolve stage reports transformers' reason before the instant
rules'. Real caches of the tiny Llama, a real broker and workers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from models_registry.deep_verdict import compute_verdict
from models_registry.demo import install_into_cache
from models_registry.models import ModelVerdict, VerdictRequest
from models_registry.resolution import resolve
from models_registry.tasks import check_model_deep, fill_model_verdicts
from models_registry.verdict_fill import fill_verdicts
from tests.api_client import call, make_user_token
from tests.broker_checks import broker, queued_checks, queued_with_kwargs  # noqa: F401 - the broker fixture
from tests.clients import secure_client

NAMES = ("test-org/a", "test-org/b", "test-org/c")


def folder_of(hf_cache: Path, name: str) -> str:
    return resolve(name, cache_dir=hf_cache).path


def asked_for(checks: list[str], folder: str) -> list[str]:
    return [check for check in checks if f"'{folder}'" in check]


def test_the_fill_asks_a_bounded_batch_and_never_twice_for_a_snapshot(
    team,
    hf_cache,
    tiny_llama_dir,
    settings,
    broker,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    settings.MTM_VERDICT_FILL_BATCH = 2
    for name in NAMES:
        install_into_cache(tiny_llama_dir, hf_cache, name)
    token = make_user_token("api-member")[1]
    assert queued_checks(broker) == []
    with django_capture_on_commit_callbacks(execute=True):  # a member asked about "a" first
        call(secure_client(), "post", "/projects/validate-model", {"model_name": NAMES[0]}, token)
        first = fill_verdicts()
    assert (first.asked, first.pending, first.current) == (1, 1, 0)  # room for one more beside the member's
    checks = queued_with_kwargs(broker)
    assert len(checks) == 2
    [b] = asked_for(checks, folder_of(hf_cache, NAMES[1]))
    assert "'refill': True" in b  # asked by the fill: its check sends the fill again once none is pending
    assert "'refill': True" not in asked_for(checks, folder_of(hf_cache, NAMES[0]))[0]

    with django_capture_on_commit_callbacks(execute=True):
        full = fill_verdicts()  # two pending: the batch is full
    assert full.asked == 0 and len(queued_checks(broker)) == 2
    assert VerdictRequest.objects.count() == 2

    for name in NAMES[:2]:  # what the worker does with the two messages
        check_model_deep(folder_of(hf_cache, name), False, name)
    with django_capture_on_commit_callbacks(execute=True):
        nxt = fill_verdicts()
        again = fill_verdicts()  # a second fill at once asks nothing more: "c" is pending already
    assert (nxt.asked, nxt.current, again.asked) == (1, 2, 0)
    checks = queued_with_kwargs(broker)
    assert len(checks) == 3 and len(asked_for(checks, folder_of(hf_cache, NAMES[2]))) == 1

    check_model_deep(folder_of(hf_cache, NAMES[2]), False, NAMES[2])
    done = fill_verdicts()
    assert (done.asked, done.current, done.left) == (3 - 3, 3, 0)
    settings.MTM_VERDICT_FILL_BATCH = 0
    assert fill_verdicts().asked == 0  # 0: no background fill


def test_workers_fill_the_verdicts_of_a_new_cache_in_the_background(start_worker, hf_cache, tiny_llama_dir):
    for name in NAMES:
        install_into_cache(tiny_llama_dir, hf_cache, name)
    worker = start_worker("checks", extra_env={"MTM_VERDICT_FILL_BATCH": "2"}).wait_ready()
    first = fill_model_verdicts.delay().get(timeout=120)
    assert (first["asked"], first["left"]) == (2, 1)  # a batch of two; the last check of it sends the fill again
    deadline = time.monotonic() + 300
    while ModelVerdict.objects.count() < len(NAMES) and time.monotonic() < deadline:
        time.sleep(0.5)
    rows = {row.folder: row.valid for row in ModelVerdict.objects.all()}
    assert rows == {folder_of(hf_cache, name): True for name in NAMES}, worker.log_text()[-3000:]
    while VerdictRequest.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not VerdictRequest.objects.exists()
    assert fill_model_verdicts.delay().get(timeout=120)["current"] == len(NAMES)


def own_template(tiny: Path, dest: Path, template: str) -> Path:
    """The tiny Llama with `template` as its chat template (in tokenizer_config.json)."""
    folder = shutil.copytree(tiny, dest)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{{ raise_exception('This template needs a system turn') }}", "This template needs a system turn"),
        ("{% for message in messages %}{{ message.content }", "jinja says: TemplateSyntaxError"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "took more than 1 s of CPU time",
        ),
    ],
    ids=["raises", "syntax-error", "loops"],
)
def test_a_chat_template_that_fails_to_render_is_a_finding_with_jinjas_words(
    settings, tmp_path, tiny_llama_dir, template, said
):
    settings.MTM_TEMPLATE_CPU_SECONDS = 1
    verdict = compute_verdict(own_template(tiny_llama_dir, tmp_path / "model", template), model_name="test-org/t")
    assert verdict.valid  # plain text still trains; only the model's own template is unusable
    [warning] = [w for w in verdict.warnings if w.code == "chat_template_unrenderable"]
    assert said in warning.message and "tokenizer_config.json" in warning.message
    assert "ChatML" in warning.hint
    assert not [w for w in compute_verdict(tiny_llama_dir).warnings if w.code == "chat_template_unrenderable"]


def run_on(team, name: str):
    from projects.models import TrainingProject, TrainingRun
    from projects.runs.config import RunConfig

    project = TrainingProject.objects.create(
        name=name.split("/")[1],
        owner=team["alice"],
        model_name=name,
        dataset_path=str(team["root"] / "datasets" / "qa.jsonl"),
        output_directory=str(team["root"] / "outputs" / name.split("/")[1]),
    )
    return TrainingRun.objects.create(
        project=project, started_by=team["alice"], config=RunConfig.of_project(project).model_dump()
    )


def test_the_resolve_stage_reports_transformers_reason_before_the_instant_rules(team, hf_cache, tiny_llama_dir):
    from projects.runs.stages import resolve_stage
    from tests.hfcache import add_file

    snapshot = install_into_cache(tiny_llama_dir, hf_cache, "test-org/gguf")
    (snapshot / "model.safetensors").unlink()  # the instant rules: no weights, only a GGUF file
    add_file(hf_cache, "test-org/gguf", "tiny.Q4_K_M.gguf", b"GGUF\x03\x00\x00\x00", commit=snapshot.name)
    no_tokenizer = install_into_cache(tiny_llama_dir, hf_cache, "test-org/untokenized")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (no_tokenizer / name).unlink(missing_ok=True)
    assert not resolve("test-org/untokenized", cache_dir=hf_cache).valid  # refused by the instant rules too

    for name in ("test-org/gguf", "test-org/untokenized"):
        run = run_on(team, name)
        assert resolve_stage(run.pk) is False
        run.refresh_from_db()
        theirs = ModelVerdict.objects.get(folder=folder_of(hf_cache, name)).result["errors"][0]
        assert (run.stage_failed, run.error_code, run.error_message) == ("resolve", theirs["code"], theirs["message"])
        assert "transformers says" in run.error_message, run.error_message
    gguf = ModelVerdict.objects.get(folder=str(snapshot)).result["errors"][0]
    assert "only GGUF weights (tiny.Q4_K_M.gguf)" in gguf["message"] and "GGUF conversion" in gguf["hint"]
