"""One rule for text the database must hold: what a person sends is refused, what a model writes is kept readable."""

import pytest
from pydantic import TypeAdapter, ValidationError

from models_registry.schemas import StoredNote
from mtm.shared.text import storable, storable_or_refused
from playground import engine
from projects.runs.columns import ValidationReport
from projects.schemas import StoredText


def test_model_text_shows_nul_and_lone_surrogates_the_same_in_run_output_and_playground_answers():
    assert storable("a\x00b\ud800c") == "a\u2400b\ufffdc"
    assert storable("plain ünïcode") == "plain ünïcode"
    assert ValidationReport(sample_output="a\x00b\ud800c").sample_output == "a\u2400b\ufffdc"
    assert engine.storable is storable


@pytest.mark.parametrize("schema", [StoredNote, StoredText])
@pytest.mark.parametrize(
    ("text", "reason"), [("a\x00b", "must not contain NUL characters"), ("a\ud800b", "lone surrogate")]
)
def test_text_a_person_sends_is_refused_with_the_reason_by_every_api_schema(schema, text, reason):
    with pytest.raises(ValidationError):  # pydantic itself may refuse a lone surrogate first
        TypeAdapter(schema).validate_python(text)
    with pytest.raises(ValueError, match=reason):
        storable_or_refused(text)
    assert TypeAdapter(schema).validate_python("fine") == "fine"
