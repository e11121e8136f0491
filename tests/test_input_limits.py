"""Input past what the portal can hold: numbers past a float, NUL bytes in the inline checks' path parameters and odd
static paths under `make run`. Each is answered with a 4xx, an error under the box, or a fragment that names the
problem; never a 500.

Every hyperparameter is fuzzed through every door that takes it: the project form, the API's POST and PATCH and the
form's inline memory estimate. The list of hyperparameters is the declaration's own (Hyperparameters.model_fields).
"""

from __future__ import annotations

import html
import io
import json
from typing import Any
from wsgiref.handlers import SimpleHandler

import pytest
from django.contrib.auth.models import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projects.hyperparameters import Hyperparameters
from tests.api_client import call, make_user_token
from tests.clients import form_data, secure_client

pytestmark = pytest.mark.django_db

NAMES = tuple(Hyperparameters.model_fields)
HX = {"HTTP_HX_REQUEST": "true"}
HUGE = "1" + "0" * 400
# JSON literals, sent as they are: Python's json reads 1e309 as inf and NaN/Infinity as floats.
JSON_VALUES = {
    "huge int": HUGE,
    "1e309": "1e309",
    "-1e309": "-1e309",
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "negative": "-1",
    "huge negative": "-" + HUGE,
    "huge string": json.dumps(HUGE),
    "'inf'": '"inf"',
    "'-inf'": '"-inf"',
    "'nan'": '"nan"',
    "non-numeric": '"lots"',
    "empty": '""',
    "long string": json.dumps("9" * 5000),
    "long text": json.dumps("x" * 5000),
    "null": "null",
    "list": "[1, 2]",
    "object": '{"a": 1}',
}
# What a person can type in a box (query and form values are text).
TEXT_VALUES = [HUGE, "1e309", "-1e309", "-1", "-" + HUGE, "nan", "NaN", "inf", "-inf", "Infinity", "lots", "", " "]
TEXT_VALUES += ["9" * 5000, "x" * 5000, "0x10", "1_000", "٣", "1e-400", "\x00", "1\x00"]


@pytest.fixture
def model_name(tiny_llama_in_cache) -> str:
    return tiny_llama_in_cache[0]


@pytest.fixture
def member(db):
    return make_user_token("mallory")


def _page(response) -> str:
    assert response.status_code < 500, response.content[:3000]
    return html.unescape(response.content.decode())


# --- the API: POST /projects and PATCH /projects/{id} -----------------------------------------------------------


def _project_json(portal_roots, model_name: str, name: str, literal: str) -> str:
    """A valid project's body with `name` set to `literal`, a JSON literal spliced in as it is."""
    body = {
        "name": "limits",
        "model_name": model_name,
        "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "output_directory": str(portal_roots / "outputs" / "limits"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 32, name: "@VALUE@"},
    }
    return json.dumps(body).replace('"@VALUE@"', literal)


def _api_verdict(response, name: str) -> str:
    """ "" when accepted, else a complaint unless the answer is a 4xx whose errors name the field."""
    if response.status_code >= 500:
        return f"{name}: {response.status_code} {response.content[:300]!r}"
    if response.status_code in (200, 201):
        return ""
    body = response.json()
    messages = " ".join(e.get("message", "") for e in body.get("errors", [])) or json.dumps(body)
    return "" if name in messages else f"{name}: {response.status_code} without the field: {messages[:300]}"


@pytest.mark.parametrize("value", list(JSON_VALUES), ids=list(JSON_VALUES))
def test_api_create_answers_every_hyperparameter_with_an_error_naming_it(
    client, portal_roots, model_name, member, value
):
    failures = []
    for name in NAMES:
        body = _project_json(portal_roots, model_name, name, JSON_VALUES[value])
        response = call(client, "post", "/projects", body, member[1])
        failures.append(_api_verdict(response, name))
        if response.status_code == 201:
            call(client, "delete", f"/projects/{response.json()['id']}", token=member[1])
    assert not [f for f in failures if f]


@pytest.mark.parametrize("value", list(JSON_VALUES), ids=list(JSON_VALUES))
def test_api_patch_answers_every_hyperparameter_with_an_error_naming_it(
    client, portal_roots, model_name, member, value
):
    created = call(client, "post", "/projects", _project_json(portal_roots, model_name, "seed", "7"), member[1])
    assert created.status_code == 201, created.content
    pid = created.json()["id"]
    failures = []
    for name in NAMES:
        body = '{"hyperparameters": {"' + name + '": ' + JSON_VALUES[value] + "}}"
        failures.append(_api_verdict(call(client, "patch", f"/projects/{pid}", body, member[1]), name))
    assert not [f for f in failures if f]


def test_a_number_past_a_float_is_refused_naming_the_field_and_its_range(client, portal_roots, model_name, member):
    """The value that raised OverflowError: a float hyperparameter given as a whole number of 401 digits."""
    response = call(client, "post", "/projects", _project_json(portal_roots, model_name, "epochs", HUGE), member[1])
    assert response.status_code == 422, response.content[:2000]
    [error] = response.json()["errors"]
    assert error["field"] == "hyperparameters"
    assert (
        "Hyperparameter 'epochs' = a whole number of about 400 digits" in error["message"]
        and "at most 1000" in error["message"]
    )


# --- the project form --------------------------------------------------------------------------------------------


def test_the_form_answers_a_number_past_a_float_under_its_box(portal_roots, model_name):
    """The form's number boxes hold 40 characters, so 1 and 400 zeros is refused by its length; the longest number
    that fits is past every bound and is named with the range."""
    client = secure_client(User.objects.create_user("typist"))
    for typed, expected in ((HUGE, "at most 40 characters"), ("1" + "0" * 39, "at most 1,")):
        response = client.post("/projects/new/", form_data(portal_roots, model_name, learning_rate=typed))
        assert response.status_code == 422
        [error] = [html.unescape(e) for e in response.context["form"].errors["learning_rate"]]
        assert expected in error
    assert "Hyperparameter 'learning_rate' = 1000" in error


@pytest.mark.parametrize("value", TEXT_VALUES, ids=lambda v: repr(v)[:20])
def test_the_form_answers_every_hyperparameter_box_under_the_box(portal_roots, model_name, value):
    client = secure_client(User.objects.create_user("typist"))
    failures = []
    for i, name in enumerate(NAMES):
        data = form_data(
            portal_roots, model_name, name=f"p{i}", output_directory=str(portal_roots / "outputs" / f"p{i}")
        )
        data[name] = value
        response = client.post("/projects/new/", data)
        if response.status_code >= 500:
            failures.append(f"{name}: {response.status_code}")
        elif response.status_code != 302 and name not in response.context["form"].errors:
            failures.append(f"{name}: refused without an error under its box: {response.context['form'].errors}")
    assert not failures


# --- the inline checks that take hyperparameters -----------------------------------------------------------------


@pytest.mark.parametrize("value", TEXT_VALUES, ids=lambda v: repr(v)[:20])
def test_the_memory_estimate_names_the_hyperparameter_it_cannot_use(portal_roots, model_name, value):
    client = secure_client(User.objects.create_user("typist"))
    failures = []
    for name in NAMES:
        page = _page(client.get("/gpus/estimate/", {"model_name": model_name, "method": "lora", name: value}, **HX))
        if "once the hyperparameters above are valid" in page and f"'{name}'" not in page:
            failures.append(f"{name}: the estimate's note does not say which box")
    assert not failures


@pytest.mark.parametrize("value", TEXT_VALUES, ids=lambda v: repr(v)[:20])
def test_the_dataset_checks_take_any_typed_hyperparameter(portal_roots, model_name, value):
    client = secure_client(User.objects.create_user("typist"))
    dataset = str(portal_roots / "datasets" / "qa.jsonl")
    for url, path in (
        ("/projects/check-dataset/", "dataset_path"),
        ("/projects/check-eval-dataset/", "eval_dataset_path"),
    ):
        for name in NAMES:
            params = {path: dataset, "model_name": model_name, name: value}
            assert client.get(url, params, **HX).status_code == 200, (url, name)


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), value=ANY_JSON | st.integers(min_value=10**300, max_value=10**1000))
def test_any_json_value_for_any_hyperparameter_is_accepted_or_named(
    client, portal_roots, model_name, member, name, value
):
    body = _project_json(portal_roots, model_name, name, json.dumps(value))
    response = call(client, "post", "/projects", body, member[1])
    assert not _api_verdict(response, name)
    if response.status_code == 201:
        call(client, "delete", f"/projects/{response.json()['id']}", token=member[1])


# --- NUL bytes in the inline checks' path parameters -------------------------------------------------------------

NUL_CHECKS = [
    ("/projects/check-output-dir/", "output_directory"),
    ("/projects/check-dataset/", "dataset_path"),
    ("/projects/check-dataset/", "model_name"),
    ("/projects/check-dataset/", "revision"),
    ("/projects/check-dataset/", "chat_template"),
    ("/projects/check-eval-dataset/", "eval_dataset_path"),
    ("/projects/check-eval-dataset/", "dataset_path"),
    ("/projects/check-eval-dataset/", "model_name"),
    ("/projects/check-eval-dataset/", "revision"),
    ("/models/validate-field/", "model_name"),
    ("/models/validate-field/", "revision"),
    ("/gpus/estimate/", "model_name"),
    ("/gpus/estimate/", "revision"),
    ("/models/{model}/", "revision"),
]


# Each box's own check names the NUL byte; the other parameters of a check only must not break it.
NAMED_BY_ITS_BOX = {
    ("/projects/check-output-dir/", "output_directory"): "NUL",
    ("/projects/check-dataset/", "dataset_path"): "NUL",
    ("/projects/check-eval-dataset/", "eval_dataset_path"): "NUL",
    ("/models/validate-field/", "model_name"): "\\x00",
}


def _nul_params(portal_roots, model_name: str, param: str, spot: str) -> dict[str, str]:
    good = {
        "output_directory": str(portal_roots / "outputs" / "nul"),
        "dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "eval_dataset_path": str(portal_roots / "datasets" / "qa.jsonl"),
        "model_name": model_name,
        "revision": "main",
        "chat_template": "chatml",
    }
    value = good[param]
    good[param] = {"start": "\x00" + value, "middle": value[:3] + "\x00" + value[3:], "end": value + "\x00"}[spot]
    return good


@pytest.mark.parametrize(("url", "param"), NUL_CHECKS, ids=[f"{u}?{p}" for u, p in NUL_CHECKS])
@pytest.mark.parametrize("spot", ["start", "middle", "end"])
def test_a_nul_byte_in_a_path_parameter_is_answered_not_a_500(portal_roots, model_name, url, param, spot):
    client = secure_client(User.objects.create_user("typist"), raise_request_exception=False)
    params = _nul_params(portal_roots, model_name, param, spot)
    response = client.get(url.format(model=model_name), params, **HX)
    body = _page(response)
    if said := NAMED_BY_ITS_BOX.get((url, param)):
        assert said in body, body[:2000]


def test_a_nul_byte_in_a_settings_path_is_named(portal_roots):
    staff = secure_client(User.objects.create_user("ops", is_staff=True), raise_request_exception=False)
    for field in ("model_cache_path", "allowed_output_roots", "allowed_dataset_roots"):
        body = _page(staff.post("/settings/validate-path/", {field: "/srv/a\x00b"}, **HX))
        assert "NUL" in body or "Null characters" in body, (field, body[:1000])


# --- static paths under `make run` (runserver, DEBUG on) ---------------------------------------------------------


def _runserver_app() -> Any:
    """The WSGI application `manage.py runserver` serves, with the options `make run` gives it (none but the
    address): whichever app provides the runserver command decides how /static/ is served."""
    from django.core.management import get_commands, load_command_class

    command = load_command_class(get_commands()["runserver"], "runserver")
    options = vars(command.create_parser("manage.py", "runserver").parse_args(["--noreload", "127.0.0.1:8000"]))
    return command.get_handler(**options)


def _serve(app: Any, raw_path: str) -> tuple[int, bytes]:
    """One request through wsgiref, as runserver's server answers it: an exception that escapes is its 500."""
    from urllib.parse import unquote_to_bytes

    path = unquote_to_bytes(raw_path).decode("latin-1")  # PEP 3333: PATH_INFO is the raw bytes as latin-1
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "HTTP_HOST": "127.0.0.1:8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "https", "HTTPS": "on",
    }  # fmt: skip
    out = io.BytesIO()
    handler = SimpleHandler(io.BytesIO(), out, io.StringIO(), environ, multithread=False)
    handler.run(app)
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


ODD_STATIC = [
    "/static/%00", "/static/a%00b.css", "/static/..%2f..%2fetc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/../../etc/passwd", "/static/" + "a" * 5000, "/static/a%ff", "/static/%c0%ae%c0%ae/x", "/static/css/",
    "/static/", "/static/..", "/static//etc/passwd", "/static/a\\..\\..\\b",
]  # fmt: skip


@pytest.mark.parametrize("path", ODD_STATIC, ids=lambda p: p[:40])
def test_an_odd_static_path_under_make_run_is_a_4xx(settings, path):
    settings.DEBUG = True  # bin/run sets DEBUG=1
    app = _runserver_app()
    status, body = _serve(app, path)
    assert 400 <= status < 500, (status, body[:500])
    assert b"root:" not in body


def test_static_files_are_still_served_under_make_run(settings):
    settings.DEBUG = True
    status, body = _serve(_runserver_app(), "/static/favicon.svg")
    assert status == 200 and b"<svg" in body
