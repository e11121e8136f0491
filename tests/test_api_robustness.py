"""No input makes the API answer 5xx: malformed JSON, wrong types, hostile strings and random bodies all get a
JSON 4xx whose error objects say what is wrong and where."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models_registry.models import ModelOverride
from tests.api_client import call, codes, make_user_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_token(db) -> str:
    return make_user_token("staff", staff=True)[1]


MALFORMED = [
    ("post", "/projects/validate-model", "{not json", "invalid_json"),
    ("post", "/projects/validate-model", "[1, 2]", "invalid_json"),
    ("post", "/projects/validate-model", '"org/model"', "invalid_json"),
    ("post", "/projects/validate-model", b"\xff\xfe\x00", "invalid_json"),
    ("post", "/projects/validate-model", {}, "invalid_request"),
    ("post", "/projects/validate-model", {"model_name": 5}, "invalid_request"),
    ("post", "/projects/validate-model", {"model_name": ["org/model"]}, "invalid_request"),
    ("post", "/projects/validate-model", {"model_name": "org/m", "revision": 3}, "invalid_request"),
    ("post", "/projects/validate-output-dir", {}, "invalid_request"),
    ("post", "/projects/validate-output-dir", {"output_directory": None}, "invalid_request"),
    # A lone surrogate is valid JSON ("\\ud800") but not text: PostgreSQL and file names refuse it.
    ("post", "/projects/validate-output-dir", {"output_directory": "/x\ud800"}, "invalid_json"),
    ("post", "/projects/validate-model", {"model_name": "org/m\ud800"}, "invalid_json"),
    ("post", "/model-overrides", {"model_name": "org/m", "path": "/m", "note": "\udfff"}, "invalid_json"),
    ("patch", "/settings", {"allowed_output_roots": ["/ok", "/x\ud800"]}, "invalid_json"),
    ("post", "/projects", {"name": "p\ud800"}, "invalid_json"),
    ("post", "/model-overrides", {"model_name": "org/m", "path": "/m", "enabled": "yes"}, "invalid_request"),
    ("post", "/model-overrides", {"model_name": "org/m", "path": "/m\x00"}, "invalid_request"),
    ("post", "/model-overrides", {"model_name": "org/m"}, "invalid_request"),
    ("patch", "/settings", {"allowed_output_roots": "/not/a/list"}, "invalid_request"),
    ("patch", "/settings", {"model_cache_path": None}, "invalid_request"),
]


@pytest.mark.parametrize(("method", "path", "body", "code"), MALFORMED)
def test_malformed_bodies_are_422_json(client, staff_token, hf_cache, method, path, body, code):
    resp = call(client, method, path, body, staff_token)
    assert resp.status_code == 422
    assert resp["Content-Type"].startswith("application/json")
    errors = resp.json()["errors"]
    assert errors and codes(errors) == [code] * len(errors)
    assert all(e["message"] and e["hint"] for e in errors)
    if code == "invalid_request":
        assert errors[0]["message"].startswith("body")  # names where the problem is


def test_field_problems_each_get_an_error_object(client, staff_token):
    resp = call(client, "post", "/model-overrides", {"model_name": 1, "path": 2, "enabled": "no"}, staff_token)
    assert resp.status_code == 422
    messages = [e["message"] for e in resp.json()["errors"]]
    assert [m.split(":")[0] for m in messages] == ["body.model_name", "body.path", "body.enabled"]


def test_oversized_body_is_413_json(client, staff_token):
    body = json.dumps({"model_name": "x" * (11 * 1024 * 1024)})
    resp = call(client, "post", "/projects/validate-model", body, staff_token)
    assert resp.status_code == 413 and codes(resp.json()["errors"]) == ["request_too_large"]


def test_wrong_method_is_not_a_server_error(client, staff_token):
    resp = call(client, "put", "/settings", {}, staff_token)
    assert resp.status_code == 405


# Strings that have broken APIs before: NUL, lone surrogates, traversal, huge, odd whitespace. No absolute
# folder that exists: an override there would make each validation walk that whole tree.
NASTY = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "../../etc/passwd", "org/model", "org/", "/no/such/dir/x", "x" * 5000,
     "\u202e", "1e400", "null", "\n\t", "a--b", "org/model/extra"]
)  # fmt: skip
TEXT = st.one_of(NASTY, st.text(max_size=40).filter(lambda s: not s.startswith("/")))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
FIELDS = ["model_name", "revision", "output_directory", "path", "enabled", "trust_remote_code", "note",
          "model_cache_path", "allowed_output_roots", "allowed_dataset_roots"]  # fmt: skip
BODIES = st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5))
TARGETS = st.sampled_from(
    [
        ("post", "/projects/validate-model"),
        ("post", "/projects/validate-output-dir"),
        ("post", "/model-overrides"),
        ("patch", "/model-overrides/{id}"),
        ("patch", "/settings"),
        ("get", "/projects/models/available?q={q}&valid={q}"),
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=TARGETS, body=BODIES, q=st.text(max_size=10))
def test_random_bodies_never_cause_a_server_error(client, staff_token, hf_cache, target, body, q):
    override, _ = ModelOverride.objects.get_or_create(model_name="org/fixed", defaults={"path": "/no/such/dir"})
    method, path = target
    path = path.format(id=override.pk, q=q.replace("&", "").replace("#", ""))
    if isinstance(body, str):  # a raw body: what a client can put on the wire is bytes, invalid UTF-8 included
        body = body.encode("utf-8", "surrogatepass")
    resp = call(client, method, path, None if method == "get" else body, staff_token)
    assert resp.status_code < 500, resp.content[:500]
    assert resp["Content-Type"].startswith("application/json")
    data = resp.json()
    if resp.status_code >= 400:
        assert data["detail"] and data["errors"]
        assert all(set(e) == {"code", "message", "hint"} and e["code"] and e["message"] for e in data["errors"])
