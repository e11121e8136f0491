"""Config against safetensors headers beyond the differential's Llama: families with other tensor names or an
embedding narrower than the hidden size must not be refused for it."""

from __future__ import annotations

from models_registry.resolution import resolve
from tests.hfcache import add_file, make_model_repo, make_safetensors


def test_an_embedding_projected_to_a_wider_hidden_size_is_not_a_mismatch(hf_cache):
    config = {"model_type": "opt", "vocab_size": 8, "hidden_size": 8, "word_embed_proj_dim": 4, "num_hidden_layers": 1}
    make_model_repo(hf_cache, "org/opt-like", config=config, weights=False)
    tensors = {"model.decoder.embed_tokens.weight": (8, 4), "model.decoder.project_in.weight": (8, 4)}
    add_file(hf_cache, "org/opt-like", "model.safetensors", make_safetensors(tensors))
    res = resolve("org/opt-like", cache_dir=hf_cache)
    assert res.valid, res.errors


def test_a_vocabulary_mismatch_is_found_in_any_family(hf_cache):
    config = {"model_type": "opt", "vocab_size": 9, "hidden_size": 4, "num_hidden_layers": 1}
    make_model_repo(hf_cache, "org/opt-like", config=config, weights=False)
    add_file(
        hf_cache, "org/opt-like", "model.safetensors", make_safetensors({"model.decoder.embed_tokens.weight": (8, 4)})
    )
    res = resolve("org/opt-like", cache_dir=hf_cache)
    assert [p.code for p in res.errors] == ["config_weights_mismatch"]
    assert "vocab_size is 9, but model.decoder.embed_tokens.weight has 8 rows" in res.errors[0].message


def test_gpt2_names_and_counts_are_read(hf_cache):
    config = {"model_type": "gpt2", "vocab_size": 8, "n_embd": 4, "n_layer": 2}
    make_model_repo(hf_cache, "org/gpt2-like", config=config, weights=False)
    tensors = {"transformer.wte.weight": (8, 4), "transformer.h.0.attn.c_attn.weight": (4, 12)}
    add_file(hf_cache, "org/gpt2-like", "model.safetensors", make_safetensors(tensors))
    res = resolve("org/gpt2-like", cache_dir=hf_cache)
    assert [p.code for p in res.errors] == ["config_weights_mismatch"]
    assert "n_layer is 2, but the weights hold 1 layers" in res.errors[0].message


def test_a_mismatch_is_reported_beside_an_unrelated_error(hf_cache):
    config = {"model_type": "llama", "vocab_size": 9, "hidden_size": 4, "num_hidden_layers": 1}
    make_model_repo(hf_cache, "org/two-problems", config=config, tokenizer=False)
    res = resolve("org/two-problems", cache_dir=hf_cache)
    assert [p.code for p in res.errors] == ["tokenizer_missing", "config_weights_mismatch"]
