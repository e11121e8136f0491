"""A snapshot folder, or a file or folder inside a snapshot, whose name is not UTF-8 (a member needs only her own
repo in the cache to make one) makes that model invalid, shown readably (U+FFFD) on the Models page, the model's
page and the API: never a 500 for everyone, and nothing in the listing's store that a page could not show.

Real folders made with bytes paths in a real HF cache layout, the real pages through the test client."""

from __future__ import annotations

import json
import os

import pytest
from django.conf import settings

from models_registry import listing
from tests.clients import secure_client
from tests.hfcache import make_model_repo

pytestmark = pytest.mark.django_db

URLS = ["/models/", "/models/odd/one/", "/api/v1/projects/models/available"]


def _odd_repo(hf_cache, variant: str) -> None:
    make_model_repo(hf_cache, "victim/fine")
    snap = make_model_repo(hf_cache, "odd/one")
    repo = snap.parent.parent
    if variant == "snapshot_name":
        os.rename(os.fsencode(snap), os.path.join(os.fsencode(repo / "snapshots"), b"\xff" * 40))
        (repo / "refs" / "main").write_bytes(b"x" * 40)  # names no snapshot: the only one is chosen
    elif variant == "file_in_snapshot":
        with open(os.path.join(os.fsencode(snap), b"\xff.json"), "wb") as odd:
            odd.write(b"{}")
    else:
        os.mkdir(os.path.join(os.fsencode(snap), b"\xff"))
        with open(os.path.join(os.fsencode(snap), b"\xff", b"x.json"), "wb") as odd:
            odd.write(b"{}")
    listing.forget()


@pytest.mark.parametrize("variant", ["snapshot_name", "file_in_snapshot", "subfolder_in_snapshot"])
def test_every_page_answers_and_the_model_is_invalid(team, hf_cache, variant):
    _odd_repo(hf_cache, variant)
    client = secure_client(team["alice"], raise_request_exception=False)
    codes = {url: client.get(url).status_code for url in URLS}
    assert 500 not in codes.values(), codes
    available = client.get("/api/v1/projects/models/available").json()
    rows = (
        {row["model_name"]: row for row in available["models"]}
        if isinstance(available, dict)
        else {row["model_name"]: row for row in available}
    )
    assert rows["victim/fine"]["valid"] is True
    assert rows["odd/one"]["valid"] is False
    assert "name_not_utf8" in [e["code"] for e in rows["odd/one"]["errors"]]
    page = client.get("/models/odd/one/").content.decode()
    assert "not UTF-8" in page
    checked = client.post("/api/v1/projects/validate-model", {"model_name": "odd/one"}, content_type="application/json")
    assert checked.status_code == 200, checked.content
    assert checked.json()["valid"] is False
    assert "name_not_utf8" in json.dumps(checked.json())


@pytest.mark.parametrize("variant", ["snapshot_name", "file_in_snapshot"])
def test_the_listing_store_holds_only_showable_text(team, hf_cache, variant):
    _odd_repo(hf_cache, variant)
    secure_client(team["alice"]).get("/models/")
    stored = json.loads((settings.VAR_DIR / "model-listing.json").read_text(encoding="utf-8"))
    ours = json.dumps(stored[str(hf_cache)], ensure_ascii=False)
    ours.encode("utf-8")  # a lone surrogate would raise here
    assert "not UTF-8" in ours
