"""The JSON API fuzzed from its own OpenAPI schema (schemathesis, through the WSGI app): for every operation, bounded
and reproducible examples, valid and invalid, never get a 5xx, and every response conforms to the schema (status
code documented, content type, body). The database holds a real project, run and override, the portal's roots are
temp folders and the tiny Llama is in the HF cache, so ids and names sometimes exist and requests sometimes succeed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from django.conf import settings as settings_module
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import ignored_auth, positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from models_registry.models import ModelOverride
from mtm.wsgi import application
from projects import services
from projects.models import RunStatus, TrainingProject, TrainingRun
from tests.api_client import make_user_token

HTTPS = {"X-Forwarded-Proto": "https"}  # DEBUG is off in tests: plain HTTP is redirected to HTTPS
# Per operation and caller; MTM_FUZZ_EXAMPLES raises it for a deeper search by hand (the suite's bound stays small).
MAX_EXAMPLES = int(os.environ.get("MTM_FUZZ_EXAMPLES", "30"))
SEED = 20_240_917
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "headers": HTTPS,
    }
)
# Checks left out, each a false alarm here:
# - positive_data_acceptance: a schema-valid body may still be refused (a blank project name, a model that is not
#   in the cache, a path outside the roots); those are 422s by design.
# - ignored_auth: the harness sends its own bearer token on every call, which this check takes for ignored auth.
EXCLUDED_CHECKS = [positive_data_acceptance, ignored_auth]

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application, config=CONFIG, headers=HTTPS)

# Path parameters the fuzzer fills with a real row's id when it generates an even positive integer.
ID_PARAMETERS = ("project_id", "run_id", "override_id", "conversation_id", "generation_id")

# The writes a member is refused: staff's alone (None), or a project's owner's and staff's, decided by the owner of
# the project or run the named path parameter points at (the world's rows are all staff's).
MEMBER_REFUSED = {
    "POST /api/v1/model-overrides": None,
    "PATCH /api/v1/model-overrides/{override_id}": None,
    "DELETE /api/v1/model-overrides/{override_id}": None,
    "PATCH /api/v1/settings": None,
    "PATCH /api/v1/projects/{project_id}": "project_id",
    "DELETE /api/v1/projects/{project_id}": "project_id",
    "POST /api/v1/projects/{project_id}/dataset": "project_id",
    "POST /api/v1/projects/{project_id}/runs": "project_id",
    "POST /api/v1/runs/{run_id}/cancel": "run_id",
}


@dataclass
class World:
    tokens: dict[str, str]  # bearer tokens by caller: the staff owner of the rows, and another member
    model_name: str
    roots: Path
    owner_id: int
    member_id: int
    project_fields: dict

    def ids(self) -> dict[str, int]:
        """Ids that exist now (rows an example deleted are made again): a project whose last run has ended, so it
        can be started and deleted, a live run of another project that can be cancelled, and an override."""
        project = self._project("fuzz")
        if not project.runs.exists():
            TrainingRun.objects.create(project=project, status=RunStatus.SUCCEEDED, run_folder=project.output_directory)
        live = self._project("fuzz-live")
        run = live.runs.first() or TrainingRun.objects.create(
            project=live, status=RunStatus.QUEUED, run_folder=live.output_directory
        )
        override, _ = ModelOverride.objects.get_or_create(
            model_name="fuzz-org/override", defaults={"path": str(self.roots / "no-such-model")}
        )
        conversation, generation = self._conversation()
        return {
            "project_id": project.pk,
            "run_id": run.pk,
            "override_id": override.pk,
            "conversation_id": conversation.pk,
            "generation_id": generation.pk,
        }

    def _conversation(self):
        """The staff owner's playground conversation with one answered turn."""
        from playground.models import Conversation, Generation, GenerationStatus, TargetKind

        owner = get_user_model().objects.get(pk=self.owner_id)
        conversation = Conversation.objects.filter(owner=owner).first() or Conversation.objects.create(
            owner=owner, kind=TargetKind.MODEL, model_name=self.model_name
        )
        generation = conversation.turns.first() or Generation.objects.create(
            conversation=conversation, owner=owner, message="hi", reply="hello", status=GenerationStatus.SUCCEEDED
        )
        return conversation, generation

    def body_values(self) -> dict[str, str]:
        return {
            "model_name": self.model_name,
            "dataset_path": str(self.roots / "datasets" / "qa.jsonl"),
            "output_directory": str(self.roots / "outputs" / "fuzz-body"),
            "path": str(self.roots / "no-such-model"),
        }

    def _project(self, name: str) -> TrainingProject:
        if project := TrainingProject.objects.filter(name=name).first():
            return project
        owner = get_user_model().objects.get(pk=self.owner_id)
        return TrainingProject.objects.create(
            owner=owner, **{**self.project_fields, "name": name, "output_directory": str(self.roots / "outputs" / name)}
        )


def _valid_project_fields(model_name: str, roots: Path) -> dict:
    """A project's fields as the project service cleans them, checked once: rows made from them are valid."""
    data = {
        "name": "fuzz",
        "model_name": model_name,
        "dataset_path": str(roots / "datasets" / "qa.jsonl"),
        "output_directory": str(roots / "outputs" / "fuzz"),
        "method": "lora",
        "hyperparameters": {"max_steps": 2, "max_seq_length": 32},
    }
    check = services.check_project(data)
    assert check.valid, check.errors
    return check.cleaned


@pytest.fixture
def world(portal_roots, tiny_llama_in_cache) -> World:
    """The portal as the fuzzer meets it, and the WSGI app kept from closing the test's database connection."""
    tmp_path = portal_roots
    user, staff_token = make_user_token("fuzz-staff", staff=True)
    member, member_token = make_user_token("fuzz-member")
    tokens = {"staff": staff_token, "member": member_token}
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        fields = _valid_project_fields(tiny_llama_in_cache[0], tmp_path)
        yield World(tokens, tiny_llama_in_cache[0], tmp_path, user.pk, member.pk, fields)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _aim_at_real_things(case, world: World) -> None:
    """Point some generated ids and body fields at things that exist, so success answers are checked too.

    Only positive (schema-valid) cases are changed, and only with values that are themselves schema-valid; even
    integers and even-length strings are swapped, so the choice follows the (seeded) generated data.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    path = case.path_parameters or {}
    swap = [name for name in ID_PARAMETERS if type(path.get(name)) is int and path[name] % 2 == 0]
    if swap:
        ids = world.ids()
        for name in swap:
            path[name] = ids[name]
    if isinstance(case.body, dict):
        for name, value in world.body_values().items():
            if isinstance(case.body.get(name), str) and len(case.body[name]) % 2 == 0:
                case.body[name] = value


def _member_refusal(case, world: World, caller: str) -> str | None:
    """What a member's call must get, for the writes the member is refused: "refused" (403) on a row that is not the
    member's or for a staff-only write, "no success" when the row is missing or the path is not an id, None where the
    member may succeed (another caller, another operation, a row the member created in an earlier example)."""
    if caller != "member" or case.operation.label not in MEMBER_REFUSED:
        return None
    parameter = MEMBER_REFUSED[case.operation.label]
    if parameter is None:
        return "refused"
    row_id = (case.path_parameters or {}).get(parameter)
    if type(row_id) is not int:
        return "no success"
    rows = TrainingProject.objects if parameter == "project_id" else TrainingRun.objects
    owner = "owner_id" if parameter == "project_id" else "project__owner_id"
    owner_id = rows.filter(pk=row_id).values_list(owner, flat=True).first()
    if owner_id is None:
        return "no success"
    return None if owner_id == world.member_id else "refused"


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@pytest.mark.parametrize("caller", ["staff", "member"])
def test_api_answers_every_generated_request_as_its_schema_says(case, world, caller):
    """Staff may do everything; a member is refused (403) writes to overrides, settings and staff's projects."""
    _aim_at_real_things(case, world)
    # Set on the case, not passed to the call: a generated (negative) Authorization is then replaced where the
    # checks look too, so a case whose only other negation serializes to valid data is not required to fail.
    case.headers = {**(case.headers or {}), **HTTPS, "Authorization": f"Bearer {world.tokens[caller]}"}
    refusal = _member_refusal(case, world, caller)
    response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
    assert response.status_code < 500
    if (
        refusal == "refused"
    ):  # 403, unless the input itself is refused first: validation (422, 413) comes before the view
        assert response.status_code in (403, 413, 422), (
            case.operation.label,
            response.status_code,
            response.text[:500],
        )
    elif refusal == "no success":
        assert response.status_code >= 400, (case.operation.label, response.status_code, response.text[:500])


# --- limits the generator never reaches: bodies over DATA_UPLOAD_MAX_MEMORY_SIZE, more than
# DATA_UPLOAD_MAX_NUMBER_FIELDS query parameters. Their 413 and 400 answers must be documented and conform too. ---

OPERATIONS = [result.ok() for result in schema.get_all_operations()]
JSON_BODY_OPERATIONS = [op for op in OPERATIONS if any(b.media_type == "application/json" for b in op.body)]
QUERY_OPERATIONS = [op for op in OPERATIONS if any(True for _ in op.query)]
OVERSIZED = "x" * (settings_module.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)


def _real_ids(operation, world: World) -> dict[str, int]:
    ids = world.ids()
    return {p.name: ids[p.name] for p in operation.path_parameters}


@pytest.mark.parametrize("operation", JSON_BODY_OPERATIONS, ids=lambda op: op.label)
def test_an_oversized_json_body_is_a_documented_413(operation, world):
    field = next(iter(operation.body[0].definition.get("schema", {}).get("properties", {})), "name")
    case = operation.Case(
        path_parameters=_real_ids(operation, world), body={field: OVERSIZED}, media_type="application/json"
    )
    headers = {**HTTPS, "Authorization": f"Bearer {world.tokens['staff']}"}
    response = case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "request_too_large"


@pytest.mark.parametrize("operation", QUERY_OPERATIONS, ids=lambda op: op.label)
def test_too_many_query_parameters_is_a_documented_400(operation, world):
    query = {f"extra{i}": "1" for i in range(settings_module.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)}
    case = operation.Case(path_parameters=_real_ids(operation, world), query=query)
    headers = {**HTTPS, "Authorization": f"Bearer {world.tokens['staff']}"}
    response = case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["code"] == "invalid_request" and "number of GET/POST parameters" in error["message"]
