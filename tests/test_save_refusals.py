"""A project that would fail at train is refused on save: a model that needs its own (untrusted) code, and .bin
weights that torch.load(weights_only=True) would refuse. The same checks answer in resolve and validate_model."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from django.contrib.auth.models import User
from django.core.management import call_command
from safetensors.torch import load_file

from models_registry.checks import check_model_folder
from models_registry.demo import install_into_cache
from models_registry.lookup import resolve_model
from models_registry.models import ModelOverride
from mtm.audit import Actor, Channel
from projects.services import ProjectInvalid, check_project, create_project
from tests.pipeline_helpers import QA_ROWS, write_jsonl

CUSTOM_MAP = {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}


def project_data(roots: Path, model_name: str) -> dict:
    return {
        "name": "demo",
        "model_name": model_name,
        "dataset_path": str(write_jsonl(roots / "datasets" / "qa.jsonl", QA_ROWS)),
        "output_directory": str(roots / "outputs" / "demo"),
        "method": "lora",
        "hyperparameters": {"max_steps": 5, "max_seq_length": 16},
    }


def codes(check, field: str = "model_name") -> list[str]:
    return [p.code for p in check.errors.get(field, [])]


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


# --- The model's own code -------------------------------------------------------------------------------------


@pytest.fixture
def custom_code_model(copy_of_tiny_llama) -> Path:
    """A model whose architecture transformers does not know: only its own code (auto_map) can build it."""
    edit_config(copy_of_tiny_llama, model_type="tiny-custom", auto_map=CUSTOM_MAP)
    (copy_of_tiny_llama / "configuration_tiny.py").write_text("raise SystemExit('model code ran')\n")
    (copy_of_tiny_llama / "modeling_tiny.py").write_text("raise SystemExit('model code ran')\n")
    return copy_of_tiny_llama


def test_model_needing_untrusted_code_is_refused_on_save_with_the_remedy(portal_roots, hf_cache, custom_code_model):
    install_into_cache(custom_code_model, hf_cache, "org/custom")
    check = check_project(project_data(portal_roots, "org/custom"))
    assert codes(check) == ["remote_code_required"]
    [problem] = check.errors["model_name"]
    assert "AutoModelForCausalLM → modeling_tiny.TinyForCausalLM" in problem.message
    assert "AutoConfig → configuration_tiny.TinyConfig" in problem.message and "'tiny-custom'" in problem.message
    assert "Model Override for 'org/custom'" in problem.hint and "'Trust remote code' ticked" in problem.hint
    assert f"cp -rL {check.resolution.path} <folder>" in problem.hint  # a snapshot's links cannot be an override
    with pytest.raises(ProjectInvalid):
        create_project(
            project_data(portal_roots, "org/custom"), actor=Actor(User.objects.create_user("ann"), Channel.CLI)
        )


def test_a_staff_override_that_trusts_the_code_lets_it_save(portal_roots, custom_code_model):
    ModelOverride.objects.create(model_name="org/custom", path=str(custom_code_model), trust_remote_code=False)
    untrusted = check_project(project_data(portal_roots, "org/custom"))
    assert codes(untrusted) == ["remote_code_required"]
    assert (
        f"Model Override pointing at {custom_code_model} with 'Trust remote code'"
        in untrusted.errors["model_name"][0].hint
    )

    ModelOverride.objects.filter(model_name="org/custom").update(trust_remote_code=True)
    project = create_project(
        project_data(portal_roots, "org/custom"), actor=Actor(User.objects.create_user("ann"), Channel.CLI)
    )
    assert project.model_name == "org/custom"


def test_trusted_code_that_is_not_in_the_folder_is_refused(portal_roots, custom_code_model):
    (custom_code_model / "modeling_tiny.py").unlink()
    edit_config(custom_code_model, auto_map={**CUSTOM_MAP, "AutoTokenizer": ["other/repo--tok.Tok", None]})
    ModelOverride.objects.create(model_name="org/custom", path=str(custom_code_model), trust_remote_code=True)
    check = check_project(project_data(portal_roots, "org/custom"))
    assert codes(check) == ["remote_code_unavailable"]
    assert "modeling_tiny.py" in check.errors["model_name"][0].message
    assert "other/repo--tok.Tok" in check.errors["model_name"][0].message


def test_own_code_beside_a_built_in_architecture_is_only_a_warning(portal_roots, hf_cache, copy_of_tiny_llama):
    edit_config(copy_of_tiny_llama, auto_map=CUSTOM_MAP)  # model_type stays "llama", which transformers builds
    install_into_cache(copy_of_tiny_llama, hf_cache, "org/llama-with-code")
    check = check_project(project_data(portal_roots, "org/llama-with-code"))
    assert check.valid
    assert "remote_code_ignored" in [p.code for p in check.warnings["model_name"]]


def own_tokenizer_code(folder: Path, tokenizer_class: str = "EvilTokenizer") -> Path:
    """A tokenizer_config.json that asks AutoTokenizer for the model's own tokenizer class (auto_map)."""
    path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(path.read_text())
    tokenizer_config.update(
        tokenizer_class=tokenizer_class, auto_map={"AutoTokenizer": ["tok_evil.EvilTokenizer", None]}
    )
    path.write_text(json.dumps(tokenizer_config))
    (folder / "tok_evil.py").write_text("raise SystemExit('tokenizer code ran')\n")
    return folder


def test_a_tokenizer_needing_untrusted_code_is_refused_on_save(portal_roots, hf_cache, copy_of_tiny_llama):
    from transformers import AutoTokenizer

    snapshot = install_into_cache(own_tokenizer_code(copy_of_tiny_llama), hf_cache, "org/own-tokenizer")
    with pytest.raises(ValueError, match="custom code"):  # what training would run into
        AutoTokenizer.from_pretrained(str(snapshot), trust_remote_code=False)
    check = check_project(project_data(portal_roots, "org/own-tokenizer"))
    assert codes(check) == ["remote_code_required"]
    [problem] = check.errors["model_name"]
    assert "tokenizer class 'EvilTokenizer'" in problem.message and "tok_evil.EvilTokenizer" in problem.message
    assert "Model Override for 'org/own-tokenizer'" in problem.hint


def test_a_trusted_override_lets_a_tokenizer_with_its_own_code_save(portal_roots, copy_of_tiny_llama):
    own_tokenizer_code(copy_of_tiny_llama)
    ModelOverride.objects.create(model_name="org/own-tok", path=str(copy_of_tiny_llama), trust_remote_code=False)
    assert codes(check_project(project_data(portal_roots, "org/own-tok"))) == ["remote_code_required"]
    ModelOverride.objects.filter(model_name="org/own-tok").update(trust_remote_code=True)
    assert check_project(project_data(portal_roots, "org/own-tok")).valid


def test_tokenizer_code_beside_a_built_in_tokenizer_class_is_only_a_warning(portal_roots, hf_cache, copy_of_tiny_llama):
    install_into_cache(own_tokenizer_code(copy_of_tiny_llama, "LlamaTokenizerFast"), hf_cache, "org/tok")
    check = check_project(project_data(portal_roots, "org/tok"))
    assert check.valid, check.errors
    assert "remote_code_ignored" in [p.code for p in check.warnings["model_name"]]


def test_the_models_list_marks_a_cached_model_that_needs_its_code(db, hf_cache, custom_code_model):
    from models_registry.lookup import available_models

    install_into_cache(custom_code_model, hf_cache, "org/custom")
    _, listed = available_models()
    [item] = [m for m in listed if m.model_name == "org/custom"]
    assert [p.code for p in item.errors] == ["remote_code_required"]


# --- .bin weights ---------------------------------------------------------------------------------------------


class _RunsCommandWhenUnpickled:
    """Pickles as a call to os.system; pickling it runs nothing, only an unrestricted unpickler would."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.command,))


def bin_model(folder: Path, extra: dict | None = None, **save_options) -> Path:
    """`folder` with its safetensors weights replaced by a pytorch_model.bin written by torch.save."""
    weights = load_file(folder / "model.safetensors")
    torch.save({**weights, **(extra or {})}, folder / "pytorch_model.bin", **save_options)
    (folder / "model.safetensors").unlink()
    return folder


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_plain_state_dict_bin_is_accepted(copy_of_tiny_llama, legacy):
    folder = bin_model(copy_of_tiny_llama, _use_new_zipfile_serialization=not legacy)
    assert torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert check_model_folder(folder).errors == []


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_bin_that_would_run_code_is_refused_on_save(portal_roots, hf_cache, copy_of_tiny_llama, tmp_path, legacy):
    marker = tmp_path / "code-ran"
    folder = bin_model(
        copy_of_tiny_llama,
        {"payload": _RunsCommandWhenUnpickled(marker)},
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(Exception, match="Weights only load failed"):  # torch refuses it too: the same rule
        torch.load(folder / "pytorch_model.bin", weights_only=True)
    install_into_cache(folder, hf_cache, "org/unsafe-bin")

    check = check_project(project_data(portal_roots, "org/unsafe-bin"))
    assert codes(check) == ["weights_unsafe"]
    [problem] = check.errors["model_name"]
    assert "pytorch_model.bin" in problem.message and f"{os.system.__module__}.system" in problem.message
    assert "weights_only=True" in problem.message and "safetensors" in problem.hint
    assert not marker.exists()


def test_a_bin_pickled_with_a_protocol_weights_only_cannot_read_is_refused(copy_of_tiny_llama):
    folder = bin_model(copy_of_tiny_llama, pickle_protocol=4)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(folder / "pytorch_model.bin", weights_only=True)
    [problem] = check_model_folder(folder).errors
    assert problem.code == "weights_unsafe" and "STACK_GLOBAL" in problem.message and "protocol (2)" in problem.hint


def test_a_handmade_global_in_data_pkl_is_found_without_running_it(copy_of_tiny_llama, tmp_path):
    folder = bin_model(copy_of_tiny_llama)
    marker = tmp_path / "code-ran"
    payload = f"touch {marker}".encode()
    # GLOBAL posix.system, one string argument, REDUCE, STOP: os.system("touch ...") if ever unpickled.
    crafted = b"\x80\x02cposix\nsystem\nX" + len(payload).to_bytes(4, "little") + payload + b"\x85R."
    original = folder / "pytorch_model.bin"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(tmp_path / "crafted.bin", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, crafted if info.filename.endswith("/data.pkl") else src.read(info))
    shutil.move(tmp_path / "crafted.bin", original)
    [problem] = check_model_folder(folder).errors
    assert problem.code == "weights_unsafe" and "posix.system" in problem.message
    assert not marker.exists()


def test_a_legacy_pickle_with_a_harmless_zip_appended_is_read_as_torch_reads_it(copy_of_tiny_llama, tmp_path):
    """torch.load tells a zip by its first bytes; a zip found only at the end (where Python's zipfile looks) must
    not hide the pickle torch would actually load."""
    folder = bin_model(
        copy_of_tiny_llama, {"payload": _RunsCommandWhenUnpickled(tmp_path / "m")}, _use_new_zipfile_serialization=False
    )
    torch.save({"w": torch.zeros(1)}, tmp_path / "harmless.bin")
    with open(folder / "pytorch_model.bin", "ab") as fh:
        fh.write((tmp_path / "harmless.bin").read_bytes())
    assert zipfile.is_zipfile(folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(folder / "pytorch_model.bin", weights_only=True)
    [problem] = check_model_folder(folder).errors
    assert problem.code == "weights_unsafe" and f"{os.system.__module__}.system" in problem.message


def test_other_bin_files_are_not_weights(copy_of_tiny_llama, tmp_path):
    """training_args.bin pickles a Python object on purpose; transformers never loads it as weights."""
    torch.save({"args": _RunsCommandWhenUnpickled(tmp_path / "x")}, copy_of_tiny_llama / "training_args.bin")
    assert check_model_folder(copy_of_tiny_llama).errors == []


def test_a_shard_named_by_the_bin_index_is_checked_whatever_its_name(copy_of_tiny_llama, tmp_path):
    folder = bin_model(copy_of_tiny_llama, {"payload": _RunsCommandWhenUnpickled(tmp_path / "m")})
    (folder / "pytorch_model.bin").rename(folder / "shard-a.bin")
    index = {"weight_map": {"model.embed_tokens.weight": "shard-a.bin"}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    [problem] = check_model_folder(folder).errors
    assert problem.code == "weights_unsafe" and "shard-a.bin" in problem.message


def test_resolve_and_validate_model_report_an_unsafe_bin(db, hf_cache, copy_of_tiny_llama, tmp_path, capsys):
    folder = bin_model(copy_of_tiny_llama, {"payload": _RunsCommandWhenUnpickled(tmp_path / "m")})
    install_into_cache(folder, hf_cache, "org/unsafe-bin")
    assert [p.code for p in resolve_model("org/unsafe-bin").errors] == ["weights_unsafe"]
    with pytest.raises(SystemExit):
        call_command("validate_model", str(folder), "--json")
    assert "weights_unsafe" in capsys.readouterr().out
