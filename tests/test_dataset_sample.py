"""Requests read only the start of a dataset (loading.Sample); the full pass runs on the worker.

Real files on disk, the real tiny Llama tokenizer, the project form and the API through the test client.
"""

from __future__ import annotations

import json
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from projects.datasets import inspect_dataset, load_dataset
from projects.datasets.loading import SAMPLE_BYTES, SAMPLE_ROWS, Sample
from tests.api_client import API, make_user_token
from tests.clients import secure_client
from tests.pipeline_helpers import QA_ROWS, write_jsonl

HX = {"HTTP_HX_REQUEST": "true"}


def qa_rows(count: int) -> list[dict]:
    return [{"prompt": f"Question {i}?", "completion": f" Answer {i}."} for i in range(count)]


def test_a_file_longer_than_the_sample_shows_at_least_the_rows_read(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", qa_rows(SAMPLE_ROWS + 500))
    report = inspect_dataset(path)
    assert report.valid and report.rows == SAMPLE_ROWS and not report.complete
    assert report.model_dump(mode="json")["complete"] is False
    assert report.sha256 is None  # hashing would read the whole file
    assert [row["prompt"] for row in report.preview] == [f"Question {i}?" for i in range(5)]
    full = inspect_dataset(path, full=True)
    assert full.rows == SAMPLE_ROWS + 500 and full.complete and full.sha256


def test_a_small_file_is_read_whole_and_says_so(tmp_path):
    report = inspect_dataset(write_jsonl(tmp_path / "qa.jsonl", QA_ROWS))
    assert report.rows == 3 and report.complete and report.sha256


def test_the_sample_ends_at_the_byte_limit_without_inventing_a_problem(tmp_path):
    rows = qa_rows(400)
    jsonl = write_jsonl(tmp_path / "d.jsonl", rows)
    array = tmp_path / "d.json"
    array.write_text(json.dumps(rows, indent=1))  # pretty-printed: rows span lines
    minified = tmp_path / "min.json"
    minified.write_text(json.dumps(rows))  # one line: the sample ends inside a row
    table = tmp_path / "d.csv"
    table.write_text("prompt,completion\n" + "".join(f'"Question {i}?","line one\nline two {i}"\n' for i in range(400)))
    for path in (jsonl, array, minified, table):
        for size in (1000, 1001, 1003, 1017, 4096):
            loaded = load_dataset(path, sample=Sample(bytes=size, rows=SAMPLE_ROWS))
            assert not loaded.complete, (path.name, size)
            assert 0 < len(loaded.rows) < 400, (path.name, size)
            assert loaded.rows == [
                {"prompt": r["prompt"], "completion": r["completion"]}
                if path.suffix != ".csv"
                else {"prompt": r["prompt"], "completion": f"line one\nline two {i}"}
                for i, r in enumerate(rows[: len(loaded.rows)])
            ], (path.name, size)
        whole = load_dataset(path, sample=Sample(bytes=path.stat().st_size, rows=SAMPLE_ROWS))
        assert whole.complete and len(whole.rows) == 400


def test_a_row_cap_counts_rows_not_bytes(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", qa_rows(50))
    capped = load_dataset(path, sample=Sample(bytes=SAMPLE_BYTES, rows=20))
    assert len(capped.rows) == 20 and not capped.complete
    exact = load_dataset(path, sample=Sample(bytes=SAMPLE_BYTES, rows=50))
    assert len(exact.rows) == 50 and exact.complete


def test_a_bad_row_inside_the_sample_is_still_named(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in qa_rows(SAMPLE_ROWS + 100)]
    lines[9] = '{"prompt": "broken'
    path.write_text("\n".join(lines) + "\n")
    report = inspect_dataset(path)
    assert [p.code for p in report.errors] == ["dataset_bad_json"]
    assert report.errors[0].message.startswith("Row 10 (line 10)")


def test_a_bad_row_past_the_sample_is_found_by_the_full_pass(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in qa_rows(SAMPLE_ROWS + 100)]
    lines[SAMPLE_ROWS + 49] = json.dumps({"prompt": "no completion"})
    path.write_text("\n".join(lines) + "\n")
    assert inspect_dataset(path).valid
    full = inspect_dataset(path, full=True)
    assert not full.valid and f"Row {SAMPLE_ROWS + 50}" in full.errors[0].message


def test_a_first_row_longer_than_the_sample_is_a_warning_not_a_false_error(tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [{"text": "x" * 2000}, {"text": "y"}])
    loaded = load_dataset(path, sample=Sample(bytes=1000, rows=SAMPLE_ROWS))
    assert loaded.rows == [] and not loaded.complete
    assert [w.code for w in loaded.warnings] == ["dataset_sample_without_rows"]


def test_token_stats_of_a_sample_speak_of_the_first_rows(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    rows = [{"prompt": "Say", "completion": " word" * 100} for _ in range(SAMPLE_ROWS + 10)]
    report = inspect_dataset(write_jsonl(tmp_path / "d.jsonl", rows), AutoTokenizer.from_pretrained(tiny_llama_dir), 32)
    assert report.token_stats is not None and report.token_stats.over_max == SAMPLE_ROWS
    [truncation] = [w for w in report.warnings if w.code == "dataset_truncation"]
    assert truncation.message.startswith(f"{SAMPLE_ROWS} of the first {SAMPLE_ROWS} rows are longer")


def test_the_form_and_the_api_show_at_least(portal_roots, db):
    body = "".join(json.dumps(r) + "\n" for r in qa_rows(SAMPLE_ROWS + 1)).encode()
    user, token = make_user_token("owner")
    page = secure_client(user).post(
        "/projects/upload-dataset/", {"dataset_file": SimpleUploadedFile("big.jsonl", body)}, **HX
    )
    html = page.content.decode()
    assert page.status_code == 200 and f"at least {SAMPLE_ROWS} rows</strong>" in html
    assert "every row is read and checked when a run starts" in html
    api = secure_client(user).post(
        API + "/datasets",
        {"file": SimpleUploadedFile("big.jsonl", body)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert api.status_code == 200, api.content
    report = api.json()["report"]
    assert report["rows"] == SAMPLE_ROWS and report["complete"] is False


def test_a_large_upload_is_moved_from_djangos_temporary_file_not_copied(tmp_path, settings):
    from django.core.files.uploadedfile import TemporaryUploadedFile

    from projects.datasets import DatasetError, store_upload

    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    body = "".join(json.dumps(r) + "\n" for r in QA_ROWS).encode()
    upload = TemporaryUploadedFile("qa.jsonl", "application/octet-stream", len(body), None)
    upload.write(body)
    upload.flush()
    temporary = upload.temporary_file_path()
    stored = store_upload(upload, "qa.jsonl", upload_root=tmp_path / "uploads")
    upload.close()  # Django's cleanup at the end of the request: the moved file is not an error
    assert stored.read_bytes() == body and not os.path.exists(temporary)

    big = TemporaryUploadedFile("big.jsonl", "application/octet-stream", len(body), None)
    big.write(body)
    big.flush()
    with pytest.raises(DatasetError) as caught:
        store_upload(big, "big.jsonl", upload_root=tmp_path / "uploads", max_bytes=10)
    assert caught.value.codes == ["dataset_too_large"]
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [stored.parent.name]
    big.close()


def test_the_form_says_when_the_part_read_holds_no_complete_row(portal_roots, db, settings):
    from projects.datasets.loading import SAMPLE_BYTES

    settings.MTM_DATASET_MAX_ROW_BYTES = 2 * SAMPLE_BYTES  # a row longer than the part read is otherwise refused

    path = write_jsonl(portal_roots / "datasets" / "long.jsonl", [{"text": "x" * SAMPLE_BYTES}, {"text": "y"}])
    user, _ = make_user_token("owner")
    html = secure_client(user).get("/projects/check-dataset/", {"dataset_path": str(path)}, **HX).content.decode()
    assert "no complete row</strong> in the part read" in html
    assert "hold no complete row, so its format and rows are not shown here" in html
