"""A repo folder in the HF cache whose name is not UTF-8 (any member who can write in the cache can make one) lists as
an invalid model name, shown readably (each undecodable byte as U+FFFD), on every page and answer that lists cached
models: never a 500 for everyone else.

Real folders made with bytes paths in a real HF cache layout, the real pages through the test client."""

from __future__ import annotations

import os
import re
from html import unescape

import pytest
from django.urls import reverse

from models_registry import listing
from tests.clients import secure_client
from tests.hfcache import make_model_repo

pytestmark = pytest.mark.django_db

ODD_FOLDERS = {
    b"models--\xff\xfe--x": "\ufffd\ufffd/x",  # bytes that are no UTF-8 at all
    b"models--org--\xed\xa0\x80": "org/\ufffd\ufffd\ufffd",  # an encoded surrogate, which UTF-8 forbids
}


@pytest.fixture(params=list(ODD_FOLDERS), ids=["not-utf8", "encoded-surrogate"])
def odd_cache(request, hf_cache):
    """The cache with one good model and one model in a folder whose name is the parameter's bytes."""
    make_model_repo(hf_cache, "victim/fine")
    make_model_repo(hf_cache, "placeholder/repo")
    os.rename(os.fsencode(hf_cache / "models--placeholder--repo"), os.fsencode(hf_cache) + b"/" + request.param)
    listing.forget()
    return ODD_FOLDERS[request.param]


def test_the_api_lists_it_as_an_invalid_name_shown_readably(team, odd_cache):
    response = secure_client(team["alice"]).get("/api/v1/projects/models/available")
    assert response.status_code == 200
    by_name = {m["model_name"]: m for m in response.json()["models"]}
    assert by_name["victim/fine"]["valid"] is True
    odd = by_name[odd_cache]
    assert odd["valid"] is False and [e["code"] for e in odd["errors"]] == ["invalid_model_name"]


def test_the_models_page_lists_it_and_its_link_answers(team, odd_cache):
    client = secure_client(team["alice"], raise_request_exception=False)
    page = client.get(reverse("registry:models"))
    assert page.status_code == 200
    html = unescape(page.content.decode())
    assert "victim/fine" in html and odd_cache in html and "non-ASCII characters" in html
    [link] = {href for href in re.findall(r'href="(/models/[^"]+)"', html) if "%EF%BF%BD" in href}
    detail = client.get(link)
    assert detail.status_code == 400 and "non-ASCII characters" in unescape(detail.content.decode())


def test_every_page_showing_cached_models_answers(team, odd_cache):
    client = secure_client(team["alice"], raise_request_exception=False)
    pages = ["/", "/projects/", "/projects/new/", reverse("workers:gpus"), "/models/?q=victim", "/models/?valid=false"]
    pages.append(reverse("registry:validate-field") + "?model_name=org/y")  # "did you mean" lists cached names
    for url in pages:
        assert client.get(url).status_code == 200, url
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", "root@example.org", "x")
    staff = secure_client(admin, raise_request_exception=False)
    for url in ("/admin/", "/admin/models_registry/modeloverride/", "/admin/models_registry/publishedmodel/"):
        assert staff.get(url).status_code == 200, url
