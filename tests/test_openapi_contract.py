"""The JSON API's contract, as its OpenAPI schema: paths, fields and operationIds. Moving a module must not
change it (django-ninja names an operation after its module unless it is given an operation_id). A deliberate change
to the API rewrites the saved schema, and the diff shows in review:

    DJANGO_SETTINGS_MODULE=mtm.settings .venv/bin/python -c "import django, json; django.setup(); \
from mtm.api import api; print(json.dumps(api.get_openapi_schema(), indent=1, sort_keys=True))" \
> tests/data/openapi.json
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from mtm.api import api
from tests.openapi_fields import api_fields

SAVED = Path(__file__).parent / "data" / "openapi.json"


def test_the_api_schema_is_the_saved_one():
    live = json.dumps(json.loads(json.dumps(api.get_openapi_schema())), indent=1, sort_keys=True)
    saved = json.dumps(json.loads(SAVED.read_text()), indent=1, sort_keys=True)
    diff = "\n".join(difflib.unified_diff(saved.splitlines(), live.splitlines(), "saved", "live", lineterm=""))
    assert live == saved, f"The API's schema changed (see this module's docstring to accept it):\n{diff[:6000]}"


def test_every_operation_keeps_a_stable_id():
    operations = [op for path in json.loads(SAVED.read_text())["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and len(ids) > 20


FIELDS = Path(__file__).parent / "data" / "openapi_fields.json"


def test_every_path_keeps_its_fields():
    """Paths, parameters and the fields of every request and response body, each with its JSON type, whatever the
    components are named. Unlike the saved schema above, a model that moves or is renamed leaves this unchanged:
    only a change clients see does not. To accept one, write the file again:

        DJANGO_SETTINGS_MODULE=mtm.settings .venv/bin/python -c "import django, json; django.setup(); \
from mtm.api import api; from tests.openapi_fields import api_fields; \
print(json.dumps(api_fields(api.get_openapi_schema()), indent=1, sort_keys=True))" > tests/data/openapi_fields.json
    """
    live = json.dumps(api_fields(json.loads(json.dumps(api.get_openapi_schema()))), indent=1, sort_keys=True)
    saved = json.dumps(json.loads(FIELDS.read_text()), indent=1, sort_keys=True)
    diff = "\n".join(difflib.unified_diff(saved.splitlines(), live.splitlines(), "saved", "live", lineterm=""))
    assert live == saved, f"The API's paths or fields changed (see this test's docstring to accept it):\n{diff[:6000]}"
