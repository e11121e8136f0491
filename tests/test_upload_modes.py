"""An uploaded dataset is the portal's alone: only its owner and staff may train on it, through the portal. Its file
is 0600 and its folder 0700 (mtm/shared/file_modes.py) from the moment each is made, whether the upload was held in
memory or first written to a temporary file, so no other account on the server can read it or link to it."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mtm.shared.file_modes import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from tests.api_client import make_user_token
from tests.test_owned_paths import QA_BYTES, upload_via_api


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("held", ["in memory", "in a temporary file"])
def test_an_upload_is_readable_by_the_portals_user_only(client, portal_roots, settings, held):
    if held == "in a temporary file":
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = len(QA_BYTES) // 2  # Django streams it to a temporary file first
    _, token = make_user_token("uploader")
    response = upload_via_api(client, token, QA_BYTES, "qa.jsonl")
    assert response.status_code == 200, response.content
    stored = Path(response.json()["dataset_path"])
    assert stored.read_bytes() == QA_BYTES
    assert (oct(mode(stored)), oct(mode(stored.parent))) == (oct(PRIVATE_FILE_MODE), oct(PRIVATE_DIR_MODE))
    assert (PRIVATE_FILE_MODE, PRIVATE_DIR_MODE) == (0o600, 0o700)
