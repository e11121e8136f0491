"""The resolver's verdict against transformers' own: every case is a real cache layout (blobs, snapshot links,
refs, .no_exist, partial blobs, a copy-only snapshot) made from the tiny real Llama, and transformers, in one
child process for all of them, loads each as training would. They must agree; a refusal must name its cause.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from models_registry.demo import DEMO_COMMIT, install_into_cache
from models_registry.listing import list_cached
from models_registry.names import repo_folder_name
from models_registry.remote_code import transformers_version
from models_registry.resolution import Resolution, resolve
from models_registry.trainability import training_refusal
from tests.hfcache import COMMIT_B, add_file, set_ref, write_blob
from tests.test_save_refusals import _RunsCommandWhenUnpickled, bin_model

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE = "test-org/base-llama"  # intact, and the base model the adapter case names
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny llama learns to repeat short sentences about training, tokens and GPUs.",
    "Question: what is two plus two? Answer: four.",
    "Hello world! Fine-tuning language models with LoRA adapters is cheap.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 174808\n".format("0" * 64)


@dataclass
class Case:
    name: str  # the repo id asked for
    build: Callable[[Path, Path, Path], None]  # (cache, tiny llama folder, scratch folder)
    code: str | None = None  # None: valid and trainable
    fragments: tuple[str, ...] = ()  # what the refusal's message (and hint) must say
    revision: str | None = None
    warning: str | None = None  # a warning a valid verdict must carry
    tokenizer_source: str | None = None
    listing_agrees: bool = False  # the quick listing reaches the same verdict


def variant(tiny: Path, scratch: Path, name: str, drop=(), config=None, tokenizer_config=None) -> Path:
    """A copy of the tiny Llama with files dropped and config/tokenizer_config keys changed."""
    dest = scratch / name.replace("/", "--")
    shutil.copytree(tiny, dest)
    for f in drop:
        (dest / f).unlink()
    for fname, changes in (("config.json", config), ("tokenizer_config.json", tokenizer_config)):
        if changes:
            data = json.loads((dest / fname).read_text())
            data.update(changes)
            (dest / fname).write_text(json.dumps(data))
    return dest


def installed(name: str, **changes) -> Callable[[Path, Path, Path], None]:
    def build(cache: Path, tiny: Path, scratch: Path) -> None:
        install_into_cache(variant(tiny, scratch, name, **changes), cache, name)

    return build


def _intact(cache, tiny, scratch):
    install_into_cache(tiny, cache, BASE)


def _sentencepiece_only(cache, tiny, scratch):
    import io

    import sentencepiece

    folder = variant(
        tiny, scratch, "spm", drop=["tokenizer.json"], tokenizer_config={"tokenizer_class": "LlamaTokenizer"}
    )
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 20), model_writer=model, vocab_size=100, model_type="bpe", minloglevel=2
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    install_into_cache(folder, cache, "test-org/spm-only")


def _vocab_merges(tokenizer_class: str, name: str):
    def build(cache, tiny, scratch):
        folder = variant(
            tiny, scratch, name, drop=["tokenizer.json"], tokenizer_config={"tokenizer_class": tokenizer_class}
        )
        model = json.loads((tiny / "tokenizer.json").read_text())["model"]
        (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        install_into_cache(folder, cache, name)

    return build


def _leftover_partial(cache, tiny, scratch):
    install_into_cache(tiny, cache, "test-org/leftover-partial")
    repo = cache / repo_folder_name("test-org/leftover-partial")
    (repo / "blobs" / ("e" * 64 + ".incomplete")).write_bytes(b"half of another revision's file")
    locks = cache / ".locks" / repo.name  # huggingface_hub keeps download locks beside the repos, not in them
    locks.mkdir(parents=True)
    (locks / ("e" * 64 + ".lock")).write_bytes(b"")


def _interrupted_weights(cache, tiny, scratch):
    snapshot = install_into_cache(tiny, cache, "test-org/interrupted")
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    blob.rename(blob.with_name(blob.name + ".incomplete"))  # huggingface_hub links a file only once it is complete
    (snapshot / "model.safetensors").unlink()


def _stale_index(cache, tiny, scratch):
    install_into_cache(tiny, cache, "test-org/stale-index")
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    add_file(cache, "test-org/stale-index", "model.safetensors.index.json", index, commit=DEMO_COMMIT)


def _copy_only(cache, tiny, scratch):
    """As huggingface_hub writes a cache where it cannot make symlinks (Windows without developer mode)."""
    repo = cache / repo_folder_name("test-org/copy-only")
    shutil.copytree(tiny, repo / "snapshots" / COMMIT_B)
    (repo / "blobs").mkdir()
    set_ref(cache, "test-org/copy-only", COMMIT_B)


def _pr_ref(cache, tiny, scratch):
    install_into_cache(tiny, cache, "test-org/with-pr", commit=COMMIT_B)
    set_ref(cache, "test-org/with-pr", COMMIT_B, ref="refs/pr/1")


def _without_lm_head(cache, tiny, scratch):
    from safetensors.numpy import load_file, save_file

    folder = variant(tiny, scratch, "no-lm-head")
    tensors = load_file(folder / "model.safetensors")  # the test's own fixture; no check reads tensors
    del tensors["lm_head.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    install_into_cache(folder, cache, "test-org/no-lm-head")


def _pickle_bin(cache, tiny, scratch):
    folder = variant(tiny, scratch, "unsafe-bin")
    bin_model(folder, {"payload": _RunsCommandWhenUnpickled(scratch / "unpickled-marker")})
    install_into_cache(folder, cache, "test-org/unsafe-bin")


def _lfs_pointer(file: str, name: str):
    def build(cache, tiny, scratch):
        folder = variant(tiny, scratch, name)
        (folder / file).write_text(LFS_POINTER)
        install_into_cache(folder, cache, name)

    return build


def _gguf_only(cache, tiny, scratch):
    name = "test-org/gguf-only"
    add_file(cache, name, "tiny-llama.Q4_K_M.gguf", b"GGUF\x03\x00\x00\x00" + bytes(64))
    add_file(cache, name, "README.md", "# tiny llama, quantized")
    set_ref(cache, name, "a" * 40)


def _gguf_beside_config(cache, tiny, scratch):
    folder = variant(tiny, scratch, "gguf-and-config", drop=["model.safetensors"])
    (folder / "tiny-llama.Q8_0.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))
    install_into_cache(folder, cache, "test-org/gguf-and-config")


def _adapter(cache, tiny, scratch):
    name = "test-org/tiny-lora"
    config = {"peft_type": "LORA", "base_model_name_or_path": BASE, "r": 4, "task_type": "CAUSAL_LM"}
    add_file(cache, name, "adapter_config.json", config)
    add_file(cache, name, "adapter_model.safetensors", (tiny / "model.safetensors").read_bytes())
    for f in ("tokenizer.json", "tokenizer_config.json"):
        add_file(cache, name, f, (tiny / f).read_bytes())
    set_ref(cache, name, "a" * 40)


def _no_exist(cache, tiny, scratch):
    name = "test-org/not-transformers"
    add_file(cache, name, "tokenizer.json", (tiny / "tokenizer.json").read_bytes())
    add_file(cache, name, "model.safetensors", (tiny / "model.safetensors").read_bytes())
    set_ref(cache, name, "a" * 40)
    marker = cache / repo_folder_name(name) / ".no_exist" / ("a" * 40) / "config.json"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"")


def _case_only(cache, tiny, scratch):
    install_into_cache(tiny, cache, "Test-Org/Mixed-Case")


def _dataset_only(cache, tiny, scratch):
    """A dataset downloaded with the same id: huggingface_hub keeps it under datasets--org--name."""
    repo = cache / "datasets--test-org--chat-data"
    blob = write_blob(repo, b'{"text": "hello"}\n')
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "train.jsonl").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)


def _renamed_shards(cache, tiny, scratch):
    from safetensors.numpy import load_file, save_file

    folder = variant(tiny, scratch, "renamed-shards", drop=["model.safetensors"])
    tensors = load_file(tiny / "model.safetensors")
    keys = sorted(tensors)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    index = {"metadata": {}, "weight_map": {k: shard for shard, ks in parts.items() for k in ks}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    for i, ks in enumerate(parts.values(), start=1):  # written under another revision's shard names
        save_file(
            {k: tensors[k] for k in ks}, folder / f"model-0000{i}-of-00003.safetensors", metadata={"format": "pt"}
        )
    install_into_cache(folder, cache, "test-org/renamed-shards")


CASES = {
    # Valid: transformers loads them, and so must the portal.
    "intact": Case(BASE, _intact, tokenizer_source="tokenizer.json", listing_agrees=True),
    "sentencepiece_only": Case("test-org/spm-only", _sentencepiece_only, tokenizer_source="tokenizer.model"),
    "vocab_and_merges": Case(
        "test-org/gpt2-vocab", _vocab_merges("GPT2Tokenizer", "test-org/gpt2-vocab"), tokenizer_source="vocab.json"
    ),
    "leftover_partial_blob": Case(
        "test-org/leftover-partial", _leftover_partial, warning="stale_partial_download", listing_agrees=True
    ),
    "stale_shard_index": Case("test-org/stale-index", _stale_index, warning="stale_shard_index", listing_agrees=True),
    "copy_only_snapshot": Case("test-org/copy-only", _copy_only, listing_agrees=True),
    "cached_pr_revision": Case("test-org/with-pr", _pr_ref, revision="refs/pr/1"),
    # False accepts, now refused.
    "tokenizer_without_vocabulary": Case(
        "test-org/no-vocab",
        installed("test-org/no-vocab", drop=["tokenizer.json"], tokenizer_config={"tokenizer_class": "LlamaTokenizer"}),
        "tokenizer_no_vocabulary",
        ("no vocabulary", "LlamaTokenizer", "tokenizer.json", "tokenizer.model"),
    ),
    "default_tokenizer_without_vocabulary": Case(
        "test-org/no-vocab-default",
        installed("test-org/no-vocab-default", drop=["tokenizer.json"]),
        "tokenizer_no_vocabulary",
        ("no vocabulary", "TokenizersBackend"),
    ),
    "vocab_files_the_class_does_not_read": Case(
        "test-org/llama-vocab",
        _vocab_merges("LlamaTokenizer", "test-org/llama-vocab"),
        "tokenizer_no_vocabulary",
        ("LlamaTokenizer needs one of tokenizer.json, tokenizer.model",),
    ),
    "unknown_model_type": Case(
        "test-org/unknown-type",
        installed("test-org/unknown-type", config={"model_type": "mtm_unheard_of", "architectures": ["X"]}),
        "model_type_unknown",
        ("'mtm_unheard_of'", f"transformers {transformers_version()}"),
        listing_agrees=True,
    ),
    "remote_code_required": Case(
        "test-org/own-code",
        installed(
            "test-org/own-code",
            config={"model_type": "mtm_custom", "auto_map": {"AutoConfig": "configuration_x.XConfig"}},
        ),
        "remote_code_required",
        ("own Python code", f"transformers {transformers_version()}", "Trust remote code"),
        listing_agrees=True,
    ),
    "vocab_size_disagrees": Case(
        "test-org/vocab-size",
        installed("test-org/vocab-size", config={"vocab_size": 400}),
        "config_weights_mismatch",
        ("vocab_size is 400", "384 rows"),
    ),
    "hidden_size_disagrees": Case(
        "test-org/hidden-size",
        installed("test-org/hidden-size", config={"hidden_size": 64, "head_dim": 16}),
        "config_weights_mismatch",
        ("hidden_size is 64", "32 wide"),
    ),
    "layer_count_disagrees": Case(
        "test-org/layers",
        installed("test-org/layers", config={"num_hidden_layers": 3}),
        "config_weights_mismatch",
        ("num_hidden_layers is 3", "hold 2 layers"),
    ),
    "weights_without_output_layer": Case(
        "test-org/no-lm-head", _without_lm_head, "weights_missing_tensors", ("lm_head.weight", "tie_word_embeddings")
    ),
    "bin_weights_only_would_refuse": Case(
        "test-org/unsafe-bin", _pickle_bin, "weights_unsafe", ("imports", "weights_only=True")
    ),
    "lfs_pointer_weights": Case(
        "test-org/lfs-weights",
        _lfs_pointer("model.safetensors", "test-org/lfs-weights"),
        "lfs_pointer",
        ("model.safetensors is a git-lfs pointer", "git lfs pull"),
    ),
    "lfs_pointer_tokenizer": Case(
        "test-org/lfs-tokenizer",
        _lfs_pointer("tokenizer.json", "test-org/lfs-tokenizer"),
        "lfs_pointer",
        ("tokenizer.json is a git-lfs pointer",),
    ),
    "no_weights": Case(
        "test-org/no-weights",
        installed("test-org/no-weights", drop=["model.safetensors"]),
        "no_weights",
        ("has no weights", "cannot be trained"),
    ),
    "gguf_beside_config": Case(
        "test-org/gguf-and-config", _gguf_beside_config, "no_weights", ("only GGUF", "tiny-llama.Q8_0.gguf")
    ),
    "interrupted_weights": Case(
        "test-org/interrupted",
        _interrupted_weights,
        "download_incomplete",
        ("interrupted download",),
        listing_agrees=True,
    ),
    # Refusals naming the real cause.
    "gguf_only": Case(
        "test-org/gguf-only", _gguf_only, "gguf_only", ("GGUF", "tiny-llama.Q4_K_M.gguf"), listing_agrees=True
    ),
    "lora_adapter": Case(
        "test-org/tiny-lora",
        _adapter,
        "adapter_not_model",
        ("LoRA adapter", f"'{BASE}'", "in the cache"),
        listing_agrees=True,
    ),
    "hub_has_no_config": Case(
        "test-org/not-transformers", _no_exist, "not_on_hub", ("no config.json on the Hub", "cannot bring it")
    ),
    "name_differs_in_case": Case(
        "test-org/mixed-case", _case_only, "model_not_found", ("Did you mean 'Test-Org/Mixed-Case'",)
    ),
    "dataset_not_model": Case(
        "test-org/chat-data", _dataset_only, "model_not_found", ("dataset repo", "datasets--test-org--chat-data")
    ),
    "shards_not_the_indexed_ones": Case(
        "test-org/renamed-shards",
        _renamed_shards,
        "shard_missing",
        ("model-00001-of-00002.safetensors", "does not name", "model-00001-of-00003.safetensors"),
    ),
    "uncached_pr_revision": Case(
        BASE, lambda *_: None, "revision_not_found", ("refs/pr/7", "--revision refs/pr/7"), revision="refs/pr/7"
    ),
}


def verdict(case: Case, cache: Path) -> tuple[Resolution, object]:
    """The portal's verdict: the resolution, and the first refusal (a resolver error, or why it cannot train)."""
    res = resolve(case.name, case.revision, cache_dir=cache)
    refusal = res.errors[0] if res.errors else training_refusal(res)
    return res, refusal


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, tiny_llama_dir) -> Path:
    cache = tmp_path_factory.mktemp("differential") / "hub"
    cache.mkdir()
    scratch = tmp_path_factory.mktemp("differential-scratch")
    for case in CASES.values():
        case.build(cache, tiny_llama_dir, scratch)
    return cache


@pytest.fixture(scope="module")
def judged(layouts) -> dict[str, dict]:
    """transformers' verdict on every case, from one child process."""
    specs = {key: {"target": c.name, "cache_dir": str(layouts), "revision": c.revision} for key, c in CASES.items()}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(layouts)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.transformers_judge"],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("key", list(CASES))
def test_verdict_agrees_with_transformers(key, layouts, judged):
    case = CASES[key]
    res, refusal = verdict(case, layouts)
    loads = judged[key]
    assert (refusal is None) == loads["loads"], (key, refusal, loads)
    if case.code is None:
        assert refusal is None and res.valid, res.errors
        if case.warning:
            assert case.warning in [w.code for w in res.warnings], res.warnings
        if case.tokenizer_source:
            assert res.tokenizer_source and res.tokenizer_source.startswith(case.tokenizer_source)
        return
    problems = [p for p in [*res.errors, refusal] if p is not None and p.code == case.code]
    assert problems, (case.code, res.errors, refusal)
    text = problems[0].message + " " + problems[0].hint
    for fragment in case.fragments:
        assert fragment in text, (fragment, text)


def test_the_quick_listing_reaches_the_same_verdict(layouts):
    listed = {m.model_name: m for m in list_cached(layouts)}
    for key, case in CASES.items():
        if not case.listing_agrees:
            continue
        res, _ = verdict(case, layouts)
        assert listed[case.name].valid == res.valid, (key, listed[case.name].errors, res.errors)
        if case.code and not res.valid:
            assert case.code in [p.code for p in listed[case.name].errors], (key, listed[case.name].errors)
        if case.warning:
            assert case.warning in [p.code for p in listed[case.name].warnings], (key, listed[case.name].warnings)


def test_the_listing_marks_weightless_models_not_trainable(layouts):
    listed = {m.model_name: m for m in list_cached(layouts)}
    [warning] = [w for w in listed["test-org/gguf-and-config"].warnings if w.code == "no_weights"]
    assert "not trainable" in warning.message and "tiny-llama.Q8_0.gguf" in warning.message


def test_no_check_ran_the_pickled_payload(layouts, judged, tmp_path_factory):
    """The unsafe .bin was scanned by the portal and loaded (and refused) by transformers: nothing unpickled it."""
    res, refusal = verdict(CASES["bin_weights_only_would_refuse"], layouts)
    assert refusal is not None
    scratch = Path(str(tmp_path_factory.getbasetemp())).glob("differential-scratch*/unpickled-marker")
    assert list(scratch) == []


WITHOUT_SENTENCEPIECE = """
import json, sys
from pathlib import Path
sys.modules["sentencepiece"] = None  # as on a server where the package is not installed
from models_registry.resolution import resolve
from tests.transformers_judge import judge
res = resolve("test-org/spm-only", cache_dir=Path(sys.argv[1]))
print(json.dumps({"errors": [p.to_dict() for p in res.errors], "judge": judge("test-org/spm-only", sys.argv[1])}))
"""


def test_without_sentencepiece_a_tokenizer_model_is_refused_saying_why(layouts):
    """The portal ships sentencepiece; on a server without it, both sides refuse, and the refusal names it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DJANGO_SETTINGS_MODULE": "mtm.settings"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SENTENCEPIECE, str(layouts)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["judge"]["loads"] is False, out["judge"]
    [error] = out["errors"]
    assert error["code"] == "tokenizer_unloadable"
    assert "needs sentencepiece, not installed" in error["message"] and "requirements.txt" in error["hint"]
