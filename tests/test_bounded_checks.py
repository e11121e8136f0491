"""Nothing a member sends costs the web process more than a bounded amount: the as-you-type dataset and eval-file
checks read only the start of the file and leave token counting to a worker (the page polls for it), and each
member has a cap on expensive requests in progress, answered 429 with when to retry.

Real files, the real tiny Llama in a real HF cache layout, the real views through the test client; the worker's
part is the domain function its Celery task calls (projects.datasets.token_counting.count_tokens), and one test
runs it on a real worker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from mtm.models import ExpensiveRequestSlot
from mtm.request_limits import RETRY_AFTER_SECONDS, STALE_AFTER, expensive_request
from projects import services
from projects.datasets import token_counting, token_stats
from projects.models import TokenCount, TrainingProject
from tests.api_client import API, call, make_user_token
from tests.clients import form_data, secure_client
from tests.pipeline_helpers import QA_ROWS, write_jsonl
from tests.token_counts import HX, count_pending, counted, poll_url

LONG_ROWS = [{"prompt": "word " * 40, "completion": " end."}, *QA_ROWS]


@pytest.fixture
def owner(db) -> User:
    return User.objects.create_user("alice", password="alice-pass-1234")


@pytest.fixture
def member(db) -> User:
    return User.objects.create_user("bob", password="bob-pass-1234")


@pytest.fixture
def long_file(portal_roots) -> Path:
    return write_jsonl(portal_roots / "datasets" / "long.jsonl", LONG_ROWS)


def check(client, path: Path, model_name: str, **extra: str):
    params = {"dataset_path": str(path), "model_name": model_name, "max_seq_length": "32", **extra}
    return client.get("/projects/check-dataset/", params, **HX)


def test_the_check_loads_no_tokenizer_and_the_worker_counts_the_tokens(owner, long_file, tiny_llama_in_cache):
    services._tokenizer.cache_clear()
    client = secure_client(owner)
    response = check(client, long_file, tiny_llama_in_cache[0])
    html = response.content.decode()
    assert response.status_code == 200
    # The bounded read: format, rows and first rows at once; no tokenizer loaded, no token counted here.
    assert "4 rows</strong>" in html and "prompt_completion" in html and "Say hello:" in html
    assert "Counting tokens…" in html and "token-stats" not in html and "will be truncated" not in html
    assert services._tokenizer.cache_info().currsize == 0
    [pending] = TokenCount.objects.all()
    assert pending.state == TokenCount.State.PENDING and pending.max_seq_length == 32
    # The page polls every 2 s with an href; 200 while the worker has not counted.
    url = poll_url(html)
    assert 'hx-trigger="every 2s"' in html and f'href="{url.replace("&", "&amp;")}"' in html
    assert client.get(url, **HX).status_code == 200
    # Once the task's function has run, the poll answers the counts with 286 (htmx stops polling).
    counts = counted(client, html, long_file, owner)
    assert "1 of 4 rows</strong> are longer than the max sequence length (32 tokens) and will be truncated" in counts
    assert "<table" in counts and "median" in counts and "Counting tokens…" not in counts.split("</div>", 1)[1]
    # Checked again, the same bytes and settings answer the counts at once, from the row the worker filled.
    again = check(client, long_file, tiny_llama_in_cache[0]).content.decode()
    assert "Counting tokens…" not in again and "1 of 4 rows</strong> are longer" in again
    assert TokenCount.objects.count() == 1 and services._tokenizer.cache_info().currsize == 1  # the worker's load


def test_another_max_seq_length_or_chat_template_is_counted_again(owner, long_file, tiny_llama_in_cache):
    client = secure_client(owner)
    counted(client, check(client, long_file, tiny_llama_in_cache[0]).content.decode(), long_file, owner)
    longer = check(client, long_file, tiny_llama_in_cache[0], max_seq_length="512").content.decode()
    assert "Counting tokens…" in longer
    chatml = check(client, long_file, tiny_llama_in_cache[0], chat_template="chatml").content.decode()
    assert "Counting tokens…" in chatml
    assert TokenCount.objects.filter(state=TokenCount.State.PENDING).count() == 2
    assert "0 rows will be truncated" in counted(client, longer, long_file, owner)


def test_a_flood_of_checks_leaves_a_member_at_most_the_cap_of_waiting_counts(
    owner, member, long_file, tiny_llama_in_cache, settings
):
    """Each other max_seq_length is another count; a member's older waiting ones are marked not counted, so their
    queued tasks end at once and cannot hold the default queue (and the periodic jobs) for everyone."""
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 2
    name = tiny_llama_in_cache[0]
    theirs = check(secure_client(member), long_file, name, max_seq_length="999").content.decode()
    client = secure_client(owner)
    for length in range(100, 108):
        assert "Counting tokens…" in check(client, long_file, name, max_seq_length=str(length)).content.decode()
    waiting = TokenCount.objects.filter(state=TokenCount.State.PENDING)
    assert sorted(waiting.filter(requested_by=owner).values_list("max_seq_length", flat=True)) == [106, 107]
    assert waiting.filter(requested_by=member).count() == 1  # another member's count is not hers to drop
    superseded = TokenCount.objects.filter(requested_by=owner, state=TokenCount.State.UNAVAILABLE)
    assert superseded.count() == 6 and {c.result["note"] for c in superseded} == {token_stats.SUPERSEDED}
    # A superseded count's queued task ends without reading the file: nothing is counted for it.
    dropped = superseded.first()
    token_counting.count_tokens(dropped.pk, str(long_file), owner.pk)
    dropped.refresh_from_db()
    assert dropped.state == TokenCount.State.UNAVAILABLE and dropped.result == {"note": token_stats.SUPERSEDED}
    assert "Counting tokens…" in theirs


def test_only_the_member_who_asked_reads_the_poll(owner, member, long_file, tiny_llama_in_cache):
    url = poll_url(check(secure_client(owner), long_file, tiny_llama_in_cache[0]).content.decode())
    assert secure_client(member).get(url, **HX).status_code == 404
    assert secure_client(owner).get(url.replace("?c=", "?c=x"), **HX).status_code == 404


def test_the_eval_file_check_is_counted_by_the_worker_too(owner, long_file, tiny_llama_in_cache):
    services._tokenizer.cache_clear()
    client = secure_client(owner)
    params = {"eval_dataset_path": str(long_file), "model_name": tiny_llama_in_cache[0], "max_seq_length": "32"}
    html = client.get("/projects/check-eval-dataset/", params, **HX).content.decode()
    assert "4 rows</strong>" in html and "Counting tokens…" in html
    assert services._tokenizer.cache_info().currsize == 0
    assert "1 of 4 rows</strong> are longer" in counted(client, html, long_file, owner)


def test_what_the_tokenizer_refuses_comes_back_with_the_counts(owner, portal_roots, hf_cache, tmp_path):
    from models_registry.demo import build_tiny_llama, install_into_cache

    install_into_cache(build_tiny_llama(tmp_path / "base", chat_template=False), hf_cache, "test-org/tiny-base")
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}] * 3
    path = write_jsonl(portal_roots / "datasets" / "chat.jsonl", rows)
    client = secure_client(owner)
    html = check(client, path, "test-org/tiny-base").content.decode()
    assert "3 rows</strong>" in html and "has no chat template" not in html  # the template is the worker's to run
    counts = counted(client, html, path, owner)
    assert "status-error" in counts and "has no chat template" in counts


def test_a_file_changed_before_the_worker_reads_it_is_not_counted(owner, long_file, tiny_llama_in_cache):
    client = secure_client(owner)
    html = check(client, long_file, tiny_llama_in_cache[0]).content.decode()
    write_jsonl(long_file, QA_ROWS)
    assert count_pending(long_file, owner) == 1
    final = client.get(poll_url(html), **HX)
    assert final.status_code == 286 and "The file changed while its tokens were counted" in final.content.decode()
    # Not kept: the next check counts again.
    assert "Counting tokens…" in check(client, long_file, tiny_llama_in_cache[0]).content.decode()


def test_the_worker_checks_the_path_again_for_the_member_who_asked(owner, member, long_file, tiny_llama_in_cache):
    """A path that has become a link out of the dataset roots by the time the worker reads it is not read."""
    client = secure_client(owner)
    html = check(client, long_file, tiny_llama_in_cache[0]).content.decode()
    moved = long_file.with_name("moved.jsonl")
    long_file.rename(moved)
    long_file.symlink_to("/etc/passwd")
    count_pending(long_file, owner)
    final = client.get(poll_url(html), **HX).content.decode()
    assert "Token lengths were not counted" in final and "root:" not in final


# --- the per-member cap -----------------------------------------------------------------------------------------


def test_beyond_the_cap_a_check_is_429_saying_when_to_retry(owner, member, long_file, settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 2
    client = secure_client(owner)
    with expensive_request(owner), expensive_request(owner):
        refused = client.get("/projects/check-dataset/", {"dataset_path": str(long_file)}, **HX)
        eval_refused = client.get("/projects/check-eval-dataset/", {"eval_dataset_path": str(long_file)}, **HX)
        other = secure_client(member).get("/projects/check-dataset/", {"dataset_path": str(long_file)}, **HX)
    for response in (refused, eval_refused):
        assert response.status_code == 429 and response["Retry-After"] == str(RETRY_AFTER_SECONDS)
        html = response.content.decode()
        assert "status-error" in html and f"Try again in {RETRY_AFTER_SECONDS} seconds" in html
    assert other.status_code == 200 and "4 rows</strong>" in other.content.decode()  # another member is not held
    after = client.get("/projects/check-dataset/", {"dataset_path": str(long_file)}, **HX)
    assert after.status_code == 200 and ExpensiveRequestSlot.objects.count() == 0  # every slot released


def test_beyond_the_cap_an_upload_from_the_form_is_429(owner, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    client = secure_client(owner)
    with expensive_request(owner):
        upload = SimpleUploadedFile("d.jsonl", b'{"text": "hello"}\n')
        response = client.post("/projects/upload-dataset/", {"dataset_file": upload}, **HX)
    assert response.status_code == 429 and response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "Try again in" in response.content.decode() and 'id="dataset-field"' in response.content.decode()


def test_beyond_the_cap_the_api_answers_a_json_429(portal_roots, settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    from django.core.files.uploadedfile import SimpleUploadedFile

    user, token = make_user_token("carol")
    client = secure_client()
    with expensive_request(user):
        response = client.post(
            API + "/datasets",
            {"file": SimpleUploadedFile("d.jsonl", b'{"text": "hello"}\n')},
            secure=True,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 429 and response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    [error] = response.json()["errors"]
    assert error["code"] == "too_many_expensive_requests" and "Try again in" in error["message"]


def test_a_slot_left_by_a_killed_process_is_reclaimed(owner, long_file, settings):
    from django.utils import timezone

    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    ExpensiveRequestSlot.objects.create(user=owner, number=0, started_at=timezone.now() - STALE_AFTER * 2)
    response = secure_client(owner).get("/projects/check-dataset/", {"dataset_path": str(long_file)}, **HX)
    assert response.status_code == 200 and ExpensiveRequestSlot.objects.count() == 0


# --- the API ----------------------------------------------------------------------------------------------------


def test_the_api_upload_answers_pending_then_the_counts(portal_roots, tiny_llama_in_cache):
    from django.core.files.uploadedfile import SimpleUploadedFile

    services._tokenizer.cache_clear()
    user, token = make_user_token("dave")
    client = secure_client()
    content = "".join(f'{{"prompt": "{r["prompt"]}", "completion": "{r["completion"]}"}}\n' for r in QA_ROWS)

    def upload():
        data = {"file": SimpleUploadedFile("qa.jsonl", content.encode()), "model_name": tiny_llama_in_cache[0]}
        response = client.post(API + "/datasets", data, secure=True, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.content
        return response.json()

    first = upload()
    assert first["report"]["token_stats"] is None and first["report"]["token_stats_state"] == "pending"
    assert first["report"]["rows"] == 3 and services._tokenizer.cache_info().currsize == 0
    count_pending(first["dataset_path"], user)
    again = upload()
    assert again["reused"] and again["report"]["token_stats_state"] == "done"
    assert again["report"]["token_stats"]["max"] > 0 and again["report"]["token_stats"]["total"] > 0


# --- a real worker ----------------------------------------------------------------------------------------------


def test_a_real_worker_on_the_default_queue_counts_the_tokens(
    start_worker, portal_roots, tiny_llama_in_cache, transactional_db
):
    owner = User.objects.create_user("erin")
    path = write_jsonl(portal_roots / "datasets" / "long.jsonl", LONG_ROWS)
    client = secure_client(owner)
    html = check(client, path, tiny_llama_in_cache[0]).content.decode()
    assert "Counting tokens…" in html
    start_worker(queues="counts").wait_ready()
    url = poll_url(html)
    response = client.get(url, **HX)
    deadline = time.monotonic() + 120
    while response.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = client.get(url, **HX)
    assert response.status_code == 286, response.content.decode()
    assert "1 of 4 rows</strong> are longer" in response.content.decode()


# --- saving a project -------------------------------------------------------------------------------------------

BIG_ROW_CHARS = 4000  # 2,000+ rows of this make a file past the 8 MiB a check reads


@pytest.fixture
def big_file(portal_roots) -> Path:
    """A prompt/completion file of about 9 MiB: the read stops at its first 8 MiB."""
    path = portal_roots / "datasets" / "big.jsonl"
    row = {"prompt": "why " * (BIG_ROW_CHARS // 4), "completion": " because."}
    with path.open("w") as out:
        for number in range(2400):
            out.write(json.dumps({**row, "prompt": f"Q{number}: {row['prompt']}"}) + "\n")
    assert path.stat().st_size > 9 * 1024 * 1024
    return path


def test_a_saved_project_is_not_tokenized_in_the_request_and_its_page_shows_the_counts(
    owner, big_file, tiny_llama_in_cache, portal_roots
):
    services._tokenizer.cache_clear()
    client = secure_client(owner)
    saved = client.post("/projects/new/", form_data(portal_roots, tiny_llama_in_cache[0], dataset_path=str(big_file)))
    assert saved.status_code == 302, saved.content.decode()[:3000]
    project = TrainingProject.objects.get()
    assert project.dataset_format == "prompt_completion"
    # The save read the start of the file and queued the count: no tokenizer loaded in the request.
    assert services._tokenizer.cache_info().currsize == 0
    [pending] = TokenCount.objects.all()
    assert pending.state == TokenCount.State.PENDING and pending.max_seq_length == 16
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Counting tokens…" in page and "are longer than the max sequence length" not in page
    # Once the worker has counted, the poll answers the numbers and the project page shows them.
    counts = counted(client, page, big_file, owner)
    assert "are longer than the max sequence length (16 tokens) and will be truncated" in counts
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert "Counting tokens…" not in page and "<table" in page
    assert "of the first" in page and "are longer than the max sequence length (16 tokens)" in page


def test_a_save_takes_the_counts_the_form_check_left(owner, long_file, tiny_llama_in_cache, portal_roots):
    client = secure_client(owner)
    counted(client, check(client, long_file, tiny_llama_in_cache[0]).content.decode(), long_file, owner)
    services._tokenizer.cache_clear()
    data = form_data(portal_roots, tiny_llama_in_cache[0], dataset_path=str(long_file), max_seq_length="32")
    found = services.check_project(services_data(data), user=owner)
    assert found.valid, found.errors
    assert found.dataset.token_stats_state == "done" and found.dataset.token_stats.max > 32
    assert [p.code for p in found.warnings["dataset_path"]] == ["dataset_truncation", "dataset_rows_dropped"]
    assert services._tokenizer.cache_info().currsize == 0 and TokenCount.objects.count() == 1


def test_a_refused_save_shows_the_rows_and_the_count_in_progress(owner, long_file, tiny_llama_in_cache, portal_roots):
    client = secure_client(owner)
    posted = form_data(portal_roots, tiny_llama_in_cache[0], dataset_path=str(long_file), output_directory="/etc/mtm")
    refused = client.post("/projects/new/", posted)
    html = refused.content.decode()
    assert refused.status_code == 422 and "4 rows</strong>" in html and "Counting tokens…" in html
    assert "of 4 rows</strong> are longer than the max sequence length (16 tokens)" in counted(
        client, html, long_file, owner
    )


def services_data(posted: dict[str, str]) -> dict:
    from projects.forms import ProjectForm

    form = ProjectForm(posted)
    assert form.is_valid(), form.errors
    return form.project_data(posted["dataset_path"])


def test_a_broken_chat_template_is_still_refused_at_save_before_any_count(owner, portal_roots, hf_cache, tmp_path):
    from models_registry.demo import build_tiny_llama, install_into_cache

    install_into_cache(build_tiny_llama(tmp_path / "base", chat_template=False), hf_cache, "test-org/tiny-base")
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}] * 3
    path = write_jsonl(portal_roots / "datasets" / "chat.jsonl", rows)
    client = secure_client(owner)
    refused = client.post("/projects/new/", form_data(portal_roots, "test-org/tiny-base", dataset_path=str(path)))
    assert refused.status_code == 422 and "has no chat template" in refused.content.decode()
    assert not TrainingProject.objects.exists()


def test_the_api_save_answers_pending_then_the_counts(portal_roots, tiny_llama_in_cache, big_file):
    from django.core.files.uploadedfile import SimpleUploadedFile

    services._tokenizer.cache_clear()
    user, token = make_user_token("frank")
    client = secure_client()
    body = {
        "name": "big",
        "model_name": tiny_llama_in_cache[0],
        "dataset_path": str(big_file),
        "output_directory": str(portal_roots / "outputs" / "big"),
        "hyperparameters": {"max_seq_length": 32},
    }
    created = call(client, "POST", "/projects", body, token)
    assert created.status_code == 201, created.content
    assert services._tokenizer.cache_info().currsize == 0
    assert TokenCount.objects.get().state == TokenCount.State.PENDING
    content = "".join(json.dumps(row) + "\n" for row in LONG_ROWS).encode()

    def upload():
        response = client.post(
            f"{API}/projects/{created.json()['id']}/dataset",
            {"file": SimpleUploadedFile("long.jsonl", content)},
            secure=True,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.content
        return response.json()

    first = upload()
    assert first["report"]["token_stats_state"] == "pending" and first["report"]["token_stats"] is None
    assert services._tokenizer.cache_info().currsize == 0
    count_pending(first["dataset_path"], user)
    again = upload()
    assert again["report"]["token_stats_state"] == "done" and again["report"]["token_stats"]["over_max"] == 1


def test_beyond_the_cap_a_save_is_429(owner, portal_roots, tiny_llama_in_cache, settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    client = secure_client(owner)
    data = form_data(portal_roots, tiny_llama_in_cache[0])
    with expensive_request(owner):
        refused = client.post("/projects/new/", data)
    assert refused.status_code == 429 and refused["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert f"Try again in {RETRY_AFTER_SECONDS} seconds" in refused.content.decode()
    assert not TrainingProject.objects.exists() and ExpensiveRequestSlot.objects.count() == 0
    assert client.post("/projects/new/", data).status_code == 302
    project = TrainingProject.objects.get()
    with expensive_request(owner):
        edit = client.post(f"/projects/{project.pk}/edit/", {**data, "name": "renamed"})
    assert edit.status_code == 429 and edit["Retry-After"] == str(RETRY_AFTER_SECONDS)
    project.refresh_from_db()
    assert project.name == "demo"
    assert client.get(f"/projects/{project.pk}/edit/").status_code == 200  # showing the form costs no slot


def test_beyond_the_cap_an_api_save_is_429(portal_roots, tiny_llama_in_cache, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    user, token = make_user_token("grace")
    client = secure_client()
    body = {
        "name": "p",
        "model_name": tiny_llama_in_cache[0],
        "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "output_directory": str(portal_roots / "outputs" / "p"),
    }
    created = call(client, "POST", "/projects", body, token)
    assert created.status_code == 201, created.content
    project_id = created.json()["id"]
    with expensive_request(user):
        answers = [
            call(client, "POST", "/projects", {**body, "name": "q"}, token),
            call(client, "PATCH", f"/projects/{project_id}", {"name": "renamed"}, token),
            client.post(
                f"{API}/projects/{project_id}/dataset",
                {"file": SimpleUploadedFile("d.jsonl", b'{"text": "hello"}\n')},
                secure=True,
                headers={"Authorization": f"Bearer {token}"},
            ),
        ]
    for response in answers:
        assert response.status_code == 429 and response["Retry-After"] == str(RETRY_AFTER_SECONDS), response.content
        [error] = response.json()["errors"]
        assert error["code"] == "too_many_expensive_requests"
    assert TrainingProject.objects.get().name == "p" and ExpensiveRequestSlot.objects.count() == 0
