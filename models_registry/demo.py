"""A tiny Llama built offline: a byte-level BPE tokenizer trained on a few sentences and random weights.

Used by `manage.py create_demo_model` (so a new portal has something to resolve and train) and by the tests.
It is named `mtm-demo/tiny-random-llama` so nobody mistakes it for a real model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

DEMO_MODEL_NAME = "mtm-demo/tiny-random-llama"
DEMO_COMMIT = "0123456789abcdef0123456789abcdef01234567"
# What the model's page and the playground say about it: its answers are random tokens, and that is expected.
DEMO_NOTE = (
    f"{DEMO_MODEL_NAME} is the untrained demo model: a tiny Llama with random weights, built by make run (manage.py "
    "create_demo_model) when the model cache is empty, so that there is something to resolve, train and chat with. "
    "It answers with random words, not language, and a few steps of fine-tuning do not teach it language. For real answers, put "
    "a real model into the Hugging Face cache (see the README) and chat with it or train it."
)


def is_demo_model(name: str) -> bool:
    """Whether `name` is the demo model create_demo_model builds."""
    return name == DEMO_MODEL_NAME


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Model Training Manager resolves models before anything is queued.",
    "A tiny llama learns to repeat short sentences about training, tokens and GPUs.",
    "Question: what is two plus two? Answer: four.",
    "Hello world! Fine-tuning language models with LoRA adapters is cheap.",
    "user assistant system: the quick answer is yes, the long answer is no.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=512
    )
    return fast


def build_tiny_llama(
    dest: Path,
    *,
    chat_template: bool = True,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a complete, loadable HF model folder (config, generation config, tokenizer, safetensors) to dest."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=16,
        do_sample=False,
    )
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest


def install_into_cache(model_folder: Path, cache_dir: Path, name: str, commit: str = DEMO_COMMIT) -> Path:
    """Lay a model folder into an HF hub cache as huggingface_hub does: blobs named by hash, refs/main
    without a newline, and relative snapshot symlinks into ../../blobs. Returns the snapshot folder."""
    import hashlib

    from models_registry.names import repo_folder_name

    repo = Path(cache_dir) / repo_folder_name(name)
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for src in sorted(Path(model_folder).rglob("*")):
        if not src.is_file():
            continue
        rel = src.relative_to(model_folder)
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def create_demo_model(cache_dir: Path, name: str = DEMO_MODEL_NAME) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_llama(Path(tmp) / "model")
        readme = {
            "warning": "Random weights. A demo model made by MTM's create_demo_model, not a real language model.",
        }
        (folder / "MTM_DEMO.json").write_text(json.dumps(readme, indent=2))
        return install_into_cache(folder, cache_dir, name)
