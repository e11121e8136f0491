"""Models a hostile member plants in the team's Hugging Face cache (it is writable by members):

- a tokenizer.json (or config.json) of nested empty lists, which json.loads turns into gigabytes in the web process
  while it holds the GIL: the web side never parses it, says where it is checked instead, and validate-model is
  under the per-member cap on expensive requests;
- a cache repo under another member's published name: the published model keeps the name (Start, the playground,
  the project form), and the planted copy is a warning naming its folder and owner.
"""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

from models_registry import bounded_json
from models_registry.demo import install_into_cache
from models_registry.lookup import available_models, resolve_model
from models_registry.resolution import owner_name
from mtm.request_limits import RETRY_AFTER_SECONDS, expensive_request
from playground.targets import for_model
from tests.api_client import call, make_user_token
from tests.clients import secure_client
from tests.test_publish import api, team  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

# Bytes of JSON that become ~25 times as many in Python objects when parsed.
NESTED_LISTS_MIB = 64
# What one check may allocate in Python: the bounded reads and a tiny model's small files, far below one parse.
PEAK_BOUND = 8 * 1024 * 1024


def nested_empty_lists(mib: int) -> bytes:
    count = (mib * 1024 * 1024 - 10) // 3
    return b'{"x":[' + b"[]," * count + b"[]]}"


def plant(tiny_llama_dir: Path, cache: Path, name: str, tmp_path: Path, **files: bytes) -> Path:
    """The tiny model laid into the cache under `name`, with `files` (file name -> contents) replaced."""
    folder = tmp_path / name.replace("/", "--")
    shutil.copytree(tiny_llama_dir, folder)
    for filename, data in files.items():
        (folder / filename.replace("__", ".")).write_bytes(data)
    return install_into_cache(folder, cache, name)


def peak_of(check) -> tuple[object, int]:
    """What `check()` returns, and the most Python memory it held at once."""
    bounded_json.forget()
    tracemalloc.start()
    try:
        result = check()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def memhog(hf_cache, tiny_llama_dir, tmp_path) -> str:
    name = "mallory-org/memhog1"
    plant(tiny_llama_dir, hf_cache, name, tmp_path, tokenizer__json=nested_empty_lists(NESTED_LISTS_MIB))
    return name


def test_a_planted_64_mib_tokenizer_is_not_parsed_in_the_web_process(memhog):
    resolution, peak = peak_of(lambda: resolve_model(memhog))
    assert peak < PEAK_BOUND, f"the check held {peak >> 20} MiB"
    assert resolution.valid and resolution.tokenizer_source == "tokenizer.json"
    [notice] = [w for w in resolution.warnings if w.code == "checked_on_worker"]
    assert notice.message.startswith("tokenizer.json (64.0 MiB) is too large to read in this request")
    assert "checked by transformers on a worker" in notice.message


def test_validate_model_and_the_model_page_say_where_the_tokenizer_is_checked(memhog):
    user, token = make_user_token("mallory")
    answer = call(secure_client(), "post", "/projects/validate-model", {"model_name": memhog}, token)
    assert answer.status_code == 200
    warnings = {w["code"]: w["message"] for w in answer.json()["warnings"]}
    assert "checked by transformers on a worker" in warnings["checked_on_worker"]
    page = secure_client(user).get(f"/models/{memhog}/")
    assert page.status_code == 200 and "checked by transformers on a worker" in page.content.decode()


def test_a_config_of_nested_lists_under_the_size_bound_is_not_parsed_either(hf_cache, tiny_llama_dir, tmp_path):
    """3 MiB is under the 4 MiB a config may have, but a million lists are no configuration."""
    name = "mallory-org/memhog3"
    plant(tiny_llama_dir, hf_cache, name, tmp_path, config__json=nested_empty_lists(3))
    resolution, peak = peak_of(lambda: resolve_model(name))
    assert peak < PEAK_BOUND, f"the check held {peak >> 20} MiB"
    assert "config.json (3.0 MiB) is too large to read in this request" in {
        w.message.split(":")[0] for w in resolution.warnings
    }


def test_a_large_tokenizer_that_cannot_be_a_json_object_is_still_refused(hf_cache, tiny_llama_dir, tmp_path):
    name = "mallory-org/lists"
    plant(tiny_llama_dir, hf_cache, name, tmp_path, tokenizer__json=b"[" + b"[]," * 1_000_000 + b"[]]")
    resolution = resolve_model(name)
    assert [e.code for e in resolution.errors] == ["tokenizer_invalid"]
    assert "tokenizer.json is not a JSON object" in resolution.errors[0].message


def test_a_file_is_read_once_while_it_does_not_change(tiny_llama_dir, tmp_path):
    path = tmp_path / "config.json"
    shutil.copyfile(tiny_llama_dir / "config.json", path)
    bounded_json.forget()
    first = bounded_json.read_json(path)
    assert bounded_json.read_json(path) is first and isinstance(first.value, dict)
    path.write_text('{"model_type": "gpt2"}')
    assert bounded_json.read_json(path).value == {"model_type": "gpt2"}  # a changed file is read again


def test_validate_model_is_under_the_per_member_cap(memhog, settings):
    settings.MTM_EXPENSIVE_REQUESTS_PER_MEMBER = 1
    mallory, mallory_token = make_user_token("mallory")
    _, alice_token = make_user_token("alice")
    client = secure_client()
    with expensive_request(mallory):
        refused = call(client, "post", "/projects/validate-model", {"model_name": memhog}, mallory_token)
        other = call(client, "post", "/projects/validate-model", {"model_name": memhog}, alice_token)
    assert refused.status_code == 429 and refused["Retry-After"] == str(RETRY_AFTER_SECONDS)
    [error] = refused.json()["errors"]
    assert (
        error["code"] == "too_many_expensive_requests"
        and f"Try again in {RETRY_AFTER_SECONDS} seconds" in (error["message"])
    )
    assert other.status_code == 200  # another member is not held up
    assert call(client, "post", "/projects/validate-model", {"model_name": memhog}, mallory_token).status_code == 200


# --- a cache repo planted under a published name -------------------------------------------------------------------


def test_a_cache_copy_planted_under_a_published_name_does_not_take_it_over(team, api, tiny_llama_dir, hf_cache):  # noqa: F811
    assert api("alice", team["run"], "alice/bot").status_code == 201
    planted = install_into_cache(tiny_llama_dir, hf_cache, "alice/bot").parent.parent  # mallory's copy
    published_folder = team["run"].run_folder

    resolution = resolve_model("alice/bot")
    assert (resolution.source, resolution.path, resolution.valid) == ("portal", published_folder, True)
    [warning] = [w for w in resolution.warnings if w.code == "cache_copy_ignored"]
    assert f"{planted} (owned by {owner_name(os.lstat(planted).st_uid)})" in warning.message
    assert for_model("alice/bot").model_dir == published_folder  # the playground
    answer = call(
        secure_client(), "post", "/projects/validate-model", {"model_name": "alice/bot"}, team["tokens"]["alice"]
    )
    assert (answer.json()["source"], answer.json()["path"]) == ("portal", published_folder)  # the project form's check
    [listed] = [m for m in available_models("alice/bot")[1] if m.model_name == "alice/bot"]
    assert listed.source == "portal" and "cache_copy_ignored" in [w.code for w in listed.warnings]

    shutil.rmtree(published_folder)  # the published folder gone: the name is refused, never handed to the copy
    gone = resolve_model("alice/bot")
    assert gone.source == "portal" and not gone.valid and gone.path != str(planted)


def test_the_memory_estimate_does_not_parse_a_planted_config_of_nested_lists(tmp_path):
    """The estimate (Start, the form, LoRA targets at save) read config.json with json.loads up to 16 MiB: a planted
    one of nested empty lists costs the web process gigabytes. It is refused by its count of values instead."""
    import tracemalloc

    from projects.runs.scheduling.memory_estimate import EstimateError, read_model_shape

    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "config.json").write_text('{"x": [' + ",".join(["[]"] * 3_000_000) + "]}")
    tracemalloc.start()
    try:
        with pytest.raises(EstimateError, match="more values than a model's configuration"):
            read_model_shape(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2
