"""What transformers itself says about a model folder, asked the way the trainer will ask it.

`examine` runs in a forked child with CPU-time and memory limits (deep_verdict.compute_verdict). It never reads a
tensor: the model is built from its config on the meta device, the checkpoint's names and shapes come from
transformers' own `load_state_dict(..., map_location="meta")` (safetensors headers; a `.bin` pickle only after the
portal's pickle scan accepted it, and then through torch's weights_only unpickler, as training loads it), and
transformers' own loading code matches them (its file choice, key renames and conversions, tied weights, keys to
ignore). The tokenizer is loaded and a sample encoded. Findings are plain dicts {code, message, hint}.
"""

from __future__ import annotations

import copy
import faulthandler
import os
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.modeling_utils import LoadStateDictConfig, _get_resolved_checkpoint_files, load_state_dict
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.quantizers.auto import get_hf_quantizer
from transformers.utils import logging

from models_registry.chat_template_source import chat_template_source
from models_registry.deep_verdict_findings import Findings, Refused, fail, quoted
from models_registry.not_a_model import gguf_files
from models_registry.pickle_scan import check_bin

# Text every tokenizer with a vocabulary encodes to ordinary (non-special) tokens.
SAMPLE = "The quick brown fox jumps over the lazy dog. Question: what is two plus two? Answer: four. 0 1 2 3 4 5"
SHOWN_KEYS = 4
# A short conversation every chat template should render: a user turn and the assistant's answer (no system turn,
# which some templates refuse by design).
SAMPLE_CONVERSATION = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "Four."},
]


def examine(
    folder: str, trust_remote_code: bool = False, model_name: str = "", template_seconds: int = 10
) -> dict[str, Any]:
    """transformers' verdict on the model folder, as plain JSON: {"errors": [...], "warnings": [...], "facts": {}}.
    `template_seconds`: the CPU time the model's own chat template may take to render a short conversation."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"  # no loader threads: one thread stays inside the memory limit
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    faulthandler.disable()  # a crash is reported by the parent, not dumped into the worker's log
    torch.set_num_threads(1)
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    found = Findings(model_name=model_name or folder, folder=folder)
    try:
        config = _config(folder, trust_remote_code, found)
        _causal_lm(config, trust_remote_code, found)
        quantized = _quantization(config, found)
        model = _meta_model(config, trust_remote_code, found)
        if not quantized:
            _weights(folder, config, model, found)
        tokenizer = _tokenizer(folder, config, model, trust_remote_code, found)
        _chat_template(folder, tokenizer, template_seconds, found)
    except Refused:
        pass
    return found.model_dump(mode="json")


def _config(folder: str, trust: bool, found: Findings) -> Any:
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust, local_files_only=True)
    except Exception as exc:
        if "trust_remote_code" in str(exc):
            raise found.refuse(
                "remote_code_required",
                f"Model '{found.model_name}' needs its own Python code to load (config.json's auto_map), which "
                f"training runs only for models staff trust. transformers says: {quoted(exc)}",
                "Staff: add a Model Override for this model with Trust remote code, only if you trust its code; "
                "or choose a model that transformers supports natively.",
            )
        raise fail(found, exc, "config_unloadable", "transformers cannot load config.json", found.redownload)


def _kind_of(config: Any) -> str | None:
    """What the model is when it is not a causal LM the trainer can train; None when it is one."""
    model_type = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        return f"an encoder-decoder (sequence-to-sequence) model ({model_type}, like T5 or BART)"
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return f"an encoder model ({model_type}, like BERT), trained to fill in masked words"
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"a {model_type} model, for which transformers has no causal language model class"
    return None


def _causal_lm(config: Any, trust: bool, found: Findings) -> None:
    auto_map = getattr(config, "auto_map", None) or {}
    if trust and "AutoModelForCausalLM" in auto_map:
        return
    if kind := _kind_of(config):
        raise found.refuse(
            "not_causal_lm",
            f"Model '{found.model_name}' is {kind}, not a causal language model: the trainer trains "
            "AutoModelForCausalLM (next-token prediction), which transformers does not build for it.",
            "Choose a decoder-only model (Llama, Qwen, Mistral, Gemma, GPT-2 …); the portal does not train "
            "sequence-to-sequence or encoder models.",
        )
    found.facts["model_type"] = getattr(config, "model_type", "")


def _quant_method(config: Any) -> str:
    spec = config.quantization_config
    method = spec.get("quant_method") if isinstance(spec, dict) else getattr(spec, "quant_method", None)
    return str(getattr(method, "value", method) or "unnamed method")


def _quantization(config: Any, found: Findings) -> bool:
    """Whether the model is quantized (its checkpoint then holds packed tensors the plain model does not name)."""
    if getattr(config, "quantization_config", None) is None:
        return False
    try:
        quantizer, _, _ = get_hf_quantizer(copy.deepcopy(config), None, None, True, None)
    except Exception as exc:
        raise fail(
            found,
            exc,
            "quantization_unusable",
            f"its quantization_config ({_quant_method(config)}) cannot be used",
            "Use the model's unquantized release, or ask the administrator to install what it needs.",
            needs=f"its quantization_config ({_quant_method(config)})",
        )
    if quantizer is None:
        return False
    method = getattr(quantizer.quantization_config, "quant_method", "?")
    method = getattr(method, "value", method)
    found.facts["quantization"] = str(method)
    if not quantizer.is_trainable:
        raise found.refuse(
            "quantized_not_trainable",
            f"Model '{found.model_name}' is quantized with {method}, which transformers cannot fine-tune, even "
            "with a LoRA adapter.",
            "Use the model's unquantized release (the repo without the quantization suffix).",
        )
    found.warn(
        "quantized_lora_only",
        f"Model '{found.model_name}' is quantized with {method}: only a LoRA run can train it (a full fine-tune "
        "cannot change quantized weights).",
        "Choose the LoRA method, or use the model's unquantized release for a full fine-tune.",
    )
    found.warn(
        "weights_not_compared",
        "The quantized checkpoint's tensors were not compared with the model (checked by the instant rules only).",
    )
    return True


def _meta_model(config: Any, trust: bool, found: Findings) -> Any:
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust)
    except Exception as exc:
        attn = getattr(config, "_attn_implementation", None)
        kernel = attn not in (None, "eager", "sdpa")
        raise fail(
            found,
            exc,
            "model_unbuildable",
            "transformers cannot build the model from config.json",
            "Restore the config.json that came with the model, or re-download it.",
            needs=f"its attention implementation {attn!r} (set in config.json)" if kernel else "",
            instead=_without_kernel(attn) if kernel else "",
        )
    found.facts["model_class"] = type(model).__name__
    return model


def _without_kernel(attn: str) -> str:
    install = "pip install flash-attn --no-build-isolation, on GPU workers" if "flash" in attn else "on the workers"
    return (
        f"Install it ({install}), or remove attn_implementation {attn!r} from config.json: the trainer asks for none."
    )


def _weights(folder: str, config: Any, model: Any, found: Findings) -> None:
    try:
        files, sharded = _get_resolved_checkpoint_files(
            folder,
            variant=None,
            gguf_file=None,
            use_safetensors=None,
            user_agent=None,
            is_remote_code=type(model).is_remote_code(),
            transformers_explicit_filename=getattr(config, "transformers_weights", None),
            download_kwargs={"local_files_only": True},
        )
    except Exception as exc:
        index = next((n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json") if n in str(exc)), "")
        code, what = ("shard_missing", f"a shard that {index} names is missing") if index else ("no_weights", "")
        ggufs = [] if index else gguf_files(_names(folder))
        if ggufs:
            what = f"it has only GGUF weights ({', '.join(ggufs[:3])}), which transformers cannot fine-tune"
        raise fail(
            found,
            exc,
            code,
            what or "transformers finds no weights it would load (model.safetensors, its index, pytorch_model.bin)",
            f"Download the full model: hf download {found.model_name} (the original repo, not its GGUF conversion)"
            if ggufs
            else found.redownload,
        )
    chosen = [Path(f) for f in files or []]
    found.facts["weight_files"] = [p.name for p in chosen]
    _warn_unopened(Path(folder), {p.name for p in chosen}, found)
    if sharded is not None and (absent := [p.name for p in chosen if not os.path.lexists(p)]):
        index = next((p.name for p in Path(folder).glob("*.index.json")), "the shard index")
        raise found.refuse(
            "shard_missing",
            f"Model '{found.model_name}': {index} names shards that are not in the folder "
            f"({_shown(absent)}), so transformers cannot load the model.",
            found.redownload,
        )
    state: dict[str, Any] = {}
    for path in chosen:
        problem = (
            check_bin(path.name, path, loaded=True, corrupt_hint=found.redownload) if path.suffix == ".bin" else None
        )
        if problem:
            raise found.refuse(problem.code, problem.message, problem.hint)
        try:
            state.update(load_state_dict(str(path), map_location="meta", weights_only=True))
        except Exception as exc:
            raise fail(
                found,
                exc,
                "weights_invalid",
                f"weights file {path.name} cannot be opened",
                found.redownload,
            )
    _compare(folder, model, state, sharded, found)


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:  # an unreadable folder is named by fail() itself
        return []


def _warn_unopened(folder: Path, chosen: set[str], found: Findings) -> None:
    """Broken weight files beside the ones transformers loads: it never opens them, so they are only untidy."""
    for path in sorted(folder.iterdir()):
        if path.name in chosen or not path.name.endswith((".safetensors", ".bin")):
            continue
        if not path.name.startswith(("model", "pytorch_model")):
            continue
        try:
            if path.suffix == ".bin":
                problem = check_bin(path.name, path, loaded=True, corrupt_hint="")
                if problem:
                    raise ValueError(problem.message)
            else:
                load_state_dict(str(path), map_location="meta")
        except Exception as exc:
            if isinstance(exc, MemoryError):
                raise
            found.warn(
                "unused_file_broken",
                f"{path.name} cannot be opened ({quoted(exc, 200)}), but transformers loads "
                f"{', '.join(sorted(chosen))} and never opens it.",
                f"Delete {path.name} to tidy the folder; training is not affected.",
            )


def _shown(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN_KEYS]) + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _compare(folder: str, model: Any, state: dict[str, Any], sharded: Any, found: Findings) -> None:
    """transformers' own loading, run over shapes only: which of the model's weights the checkpoint leaves missing
    or gives another shape, after its renames, conversions, tied weights and keys to ignore."""
    cls = type(model)
    load_config = LoadStateDictConfig(
        pretrained_model_name_or_path=folder,
        ignore_mismatched_sizes=True,  # the mismatches are read from the loading info, not raised by its report
        sharded_metadata=sharded,
        device_map={"": "meta"},
        dtype=torch.float32,
        dtype_plan=model._get_dtype_plan(torch.float32),
        weight_mapping=get_model_conversion_mapping(model, None, None),
        weights_only=True,
    )
    try:
        info, _ = cls._load_pretrained_model(model, state, None, load_config)
        info = cls._finalize_model_loading(model, load_config, info)
    except Exception as exc:
        if isinstance(exc, MemoryError):
            raise
        raise found.refuse(
            "weights_unloadable",
            f"Model '{found.model_name}': transformers cannot match the checkpoint to the model. It says: "
            f"{quoted(exc)}",
            found.redownload,
        )
    mismatched = sorted(info.mismatched_keys, key=lambda m: m[0])
    if mismatched:
        shown = "; ".join(
            f"{k} is {list(have)} in the checkpoint, {list(want)} in the model" for k, have, want in mismatched[:3]
        )
        raise found.refuse(
            "config_weights_mismatch",
            f"Model '{found.model_name}': config.json and the weights disagree on {len(mismatched)} tensor shapes "
            f"({shown}); transformers would refuse to load them.",
            "Restore the config.json that came with these weights (if you edited it), or re-download the model.",
        )
    missing = sorted(info.missing_keys)
    if missing:
        raise found.refuse(
            "weights_missing_tensors", *_missing_words(model, missing, sorted(info.unexpected_keys), found)
        )
    if unexpected := sorted(info.unexpected_keys):
        found.warn(
            "unused_weights",
            f"The checkpoint holds {len(unexpected)} tensors the model does not use ({_shown(unexpected)}); "
            "transformers ignores them.",
        )


def _missing_words(model: Any, missing: list[str], unexpected: list[str], found: Findings) -> tuple[str, str]:
    message = (
        f"Model '{found.model_name}': {len(missing)} weights the model needs are not in the checkpoint "
        f"({_shown(missing)}): transformers would start them random, so training would begin from noise there."
    )
    head = {k for k in missing if k.endswith("lm_head.weight")}
    tied = getattr(model.config, "tie_word_embeddings", None)
    if head and len(missing) == len(head) and tied is False:
        return (
            message + " config.json says tie_word_embeddings is false, so the output layer is not the embedding.",
            "If this model's output layer shares the embedding, set tie_word_embeddings to true in config.json; "
            "otherwise download the complete weights (the file that holds lm_head.weight).",
        )
    if unexpected:
        return (
            message + f" The checkpoint has tensors under other names instead ({_shown(unexpected)}): it was saved "
            "for another architecture or by another library.",
            "Use weights saved for this architecture by transformers (save_pretrained), or convert them; "
            "re-downloading the same files will not help.",
        )
    return message, found.redownload


def _tokenizer(folder: str, config: Any, model: Any, trust: bool, found: Findings) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust, local_files_only=True)
        ids = list(tokenizer(SAMPLE)["input_ids"])
    except Exception as exc:
        raise fail(
            found,
            exc,
            "tokenizer_unloadable",
            "transformers cannot load its tokenizer (as the trainer loads it, with AutoTokenizer)",
            found.redownload,
            needs="its tokenizer",
        )
    found.facts["tokenizer_class"] = type(tokenizer).__name__
    special = set(tokenizer.all_special_ids)
    if not [i for i in ids if i not in special]:
        raise found.refuse(
            "tokenizer_no_vocabulary",
            f"Model '{found.model_name}': its tokenizer ({type(tokenizer).__name__}) encodes ordinary text to "
            f"special tokens only ({ids[:8]}): it has no vocabulary, and every example would encode to nothing.",
            "Use a copy of the model that includes its tokenizer files (tokenizer.json, or tokenizer.model).",
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise found.refuse(
            "tokenizer_no_pad",
            f"Model '{found.model_name}': its tokenizer has neither a pad nor an eos token, so batches cannot be "
            "padded.",
            "Use a model whose tokenizer defines an eos token.",
        )
    _ids_fit_embedding(tokenizer, ids, model, found)
    return tokenizer


def _ids_fit_embedding(tokenizer: Any, ids: list[int], model: Any, found: Findings) -> None:
    added = {int(i): str(t) for i, t in tokenizer.added_tokens_decoder.items()}
    candidates = {i: None for i in ids} | added
    for token_id in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if isinstance(token_id, int):
            candidates.setdefault(token_id, None)
    largest = max(candidates)
    rows = int(model.get_input_embeddings().weight.shape[0])
    found.facts.update(largest_token_id=largest, embedding_rows=rows)
    if largest < rows:
        return
    beyond = sorted(i for i in candidates if i >= rows)
    named = [f"{i} ({added[i]!r})" if i in added else str(i) for i in beyond[:3]]
    raise found.refuse(
        "tokenizer_exceeds_embedding",
        f"Model '{found.model_name}': its tokenizer gives token ids up to {largest} ({', '.join(named)}), but the "
        f"model's embedding has {rows} rows (config.json vocab_size {getattr(model.config, 'vocab_size', '?')}): "
        "the first training step would fail with an index error (on a GPU, a device-side assert).",
        "Use the tokenizer that came with these weights; if tokens were added to it, resize the model's embedding "
        "(resize_token_embeddings) and save the model again.",
    )


class _TemplateTooSlow(BaseException):  # not an Exception: no handler inside jinja swallows it
    pass


def _out_of_time(signum: int, frame: Any) -> None:
    raise _TemplateTooSlow


def _chat_template(folder: str, tokenizer: Any, seconds: int, found: Findings) -> None:
    """The model's own chat template rendered over a short conversation, as training renders a messages dataset.
    A template that fails is a warning quoting jinja's (or transformers') words: the model still trains on plain
    text, and a project can use ChatML instead. It gets `seconds` of CPU time, so a template that loops leaves
    the rest of the verdict standing."""
    if not getattr(tokenizer, "chat_template", None):
        return
    where = chat_template_source(folder) or "its tokenizer files"
    found.facts["chat_template"] = where
    previous = signal.signal(signal.SIGPROF, _out_of_time)
    signal.setitimer(signal.ITIMER_PROF, max(1, seconds))
    try:
        tokenizer.apply_chat_template(SAMPLE_CONVERSATION, tokenize=False)
    except _TemplateTooSlow:
        said = f"it took more than {seconds} s of CPU time to render two short messages, so it was stopped"
    except MemoryError:
        said = "it ran out of memory rendering two short messages"
    except Exception as exc:  # jinja's TemplateError, or transformers' words about the template
        said = f"it fails to render a short conversation. jinja says: {quoted(exc)}"
    else:
        return
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    found.warn(
        "chat_template_unrenderable",
        f"Model '{found.model_name}': its own chat template (in {where}) cannot be used: {said}. A project that "
        "trains it on conversations (a messages dataset) with the model's own template would fail.",
        f"Set the project's Chat template to ChatML, or fix the chat_template in {where}; plain-text and "
        "prompt/completion datasets are not affected.",
    )
