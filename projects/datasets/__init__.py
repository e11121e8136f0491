"""The dataset layer: plain functions on paths and values, shared by the project form, the API and the trainer.

check = check_dataset_path(raw, allowed_roots)            # where the file is; Problem objects
report = inspect_dataset(check.path, tokenizer, 512)      # format, rows, preview, token stats
rows = load_rows(path); fmt = detect_format(rows)         # in the trainer's child process
examples = build_examples(rows, fmt, tokenizer, 512)      # [{"input_ids", "labels"}], labels -100 = no loss
"""

from __future__ import annotations

from projects.datasets.errors import DatasetError, RowRef, has_chat_template
from projects.datasets.examples import (
    IGNORE_INDEX,
    Examples,
    alpaca_prompt,
    build_examples,
    encode_rows,
    prompt_text,
)
from projects.datasets.formats import CHAT_ROLES, SHAPES, SUPPORTED_FORMATS, detect_format
from projects.datasets.loading import DEFAULT_MAX_BYTES, LoadedDataset, load_dataset, load_rows
from projects.datasets.paths import (
    UPLOAD_EXTENSIONS,
    DatasetPathCheck,
    check_dataset_path,
    safe_upload_name,
    store_upload,
    uploads_root,
)
from projects.datasets.report import DatasetReport, TokenStats, inspect_dataset

__all__ = [
    "CHAT_ROLES",
    "DEFAULT_MAX_BYTES",
    "IGNORE_INDEX",
    "SHAPES",
    "SUPPORTED_FORMATS",
    "UPLOAD_EXTENSIONS",
    "DatasetError",
    "DatasetPathCheck",
    "DatasetReport",
    "Examples",
    "LoadedDataset",
    "RowRef",
    "TokenStats",
    "alpaca_prompt",
    "build_examples",
    "check_dataset_path",
    "detect_format",
    "encode_rows",
    "has_chat_template",
    "inspect_dataset",
    "load_dataset",
    "load_rows",
    "prompt_text",
    "safe_upload_name",
    "store_upload",
    "uploads_root",
]
