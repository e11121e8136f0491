"""Results kept as JSON (a token count's row, a cached verdict's row, the persisted model listing) read as their
models and are written back in the same shape: rows written before still read, and nothing a reader expects moves."""

from __future__ import annotations

import json
import os

from models_registry.deep_verdict import DeepVerdict
from models_registry.listing import forget, list_cached
from mtm.shared.problems import Problem
from projects.datasets.report import DatasetReport
from projects.datasets.token_stats import apply_count
from projects.models import TokenCount
from projects.schemas import DatasetReportOut
from tests.hfcache import make_model_repo

STATS = {
    "min": 3,
    "p50": 7,
    "p95": 12,
    "max": 40,
    "mean": 8.5,
    "total": 170,
    "over_max": 1,
    "dropped": 0,
    "max_seq_length": 32,
}
# A finished count's result, as the worker stores it.
COUNTED = {
    "rows": 20,
    "complete": True,
    "token_stats": STATS,
    "pair_token_stats": {"prompt": {**STATS, "max_seq_length": 16}, "chosen": STATS, "rejected": STATS},
    "warnings": [{"code": "dataset_rows_truncated", "message": "1 row is longer than 32 tokens.", "hint": "Raise it."}],
    "errors": [],
}
# A cached verdict's result column.
VERDICT = {
    "folder": "/models/org/m",
    "valid": False,
    "errors": [{"code": "weights_invalid", "message": "model.safetensors is corrupt.", "hint": "Download it again."}],
    "warnings": [],
    "facts": {"model_type": "llama", "weight_files": ["model.safetensors"]},
    "checked_at": "2026-01-02T03:04:05Z",
    "versions": {"transformers": "4.57.1", "torch": "2.9.0"},
    "fingerprint": "ab" * 32,
}


def test_a_stored_token_count_reads_into_the_report_and_answers_the_same_numbers(db):
    count = TokenCount.objects.create(
        key="k", sample_sha256="s", tokenizer="t", model_name="org/m", state=TokenCount.State.DONE, result=COUNTED
    )
    report = apply_count(DatasetReport(path="/data/pairs.jsonl"), count)
    assert report.token_stats_state == "done" and report.warnings == [
        Problem("dataset_rows_truncated", "1 row is longer than 32 tokens.", "Raise it.")
    ]
    answered = DatasetReportOut.model_validate(report).model_dump(mode="json")
    assert answered["token_stats"] == STATS and answered["pair_token_stats"] == COUNTED["pair_token_stats"]
    assert answered["warnings"] == COUNTED["warnings"] and answered["valid"] is True


def test_a_cached_verdict_reads_as_problems_and_is_written_back_unchanged():
    verdict = DeepVerdict.model_validate(VERDICT)
    assert verdict.first_error() == Problem("weights_invalid", "model.safetensors is corrupt.", "Download it again.")
    assert verdict.model_dump(mode="json") == VERDICT


def test_the_persisted_listing_keeps_the_shape_of_its_entries(hf_cache, tmp_path):
    store = tmp_path / "listing.json"
    make_model_repo(hf_cache, "org/a", tokenizer=False)
    first = list_cached(hf_cache, store)
    [(_, entry)] = json.loads(store.read_text())[os.path.abspath(hf_cache)].values()
    assert set(entry) == {"model_name", "source", "path", "revision", "errors", "warnings"}
    assert entry["errors"] and all(set(problem) == {"code", "message", "hint"} for problem in entry["errors"])
    forget()  # a new process starts from the store
    assert [item.model_dump() for item in list_cached(hf_cache, store)] == [item.model_dump() for item in first]
