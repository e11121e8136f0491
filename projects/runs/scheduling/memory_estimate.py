"""Peak training memory of a run, from the model's config.json and safetensors headers only (no weight is loaded).

The parameter, gradient and optimizer-state terms are exact for the way projects.trainer trains: a full
fine-tune holds fp32 weights (mixed precision keeps fp32 master weights) and trains them all; LoRA on a GPU holds the
frozen base in the compute dtype (bf16/fp16) and fp32 adapters (peft's default), on the CPU everything in fp32.
AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype and a 4-byte step per parameter tensor.

The activation term is an approximation for Llama-style decoder blocks (what a block keeps for its backward pass,
with a fused attention kernel, plus the fp32 logits); it is not checked against a GPU yet. The overhead is stated:
a fixed allowance for the CUDA context and the allocator, plus a share of the rest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from models_registry.bounded_json import MAX_HEADER_BYTES, parse_bytes
from models_registry.regular_files import open_regular, read_regular

GIB = 1024**3
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I8": 1,
    "U8": 1,
}
COMPUTE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
CUDA_CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS workspaces and kernels: measured ~0.5-1 GiB on current cards
ALLOCATOR_SLACK = 0.05  # fragmentation in PyTorch's caching allocator, as a share of the rest
ADAPTER_BYTES = 4  # peft keeps adapter weights in fp32 over a bf16/fp16 base
OPTIMIZER_STEP_BYTES = 4  # AdamW's per-tensor step counter (a float32 scalar tensor)
EMBEDDING_NAME = re.compile(r"(^|\.)(embed_tokens|wte|wpe|embed_positions|word_embeddings)\.")
# A config.json or a safetensors index is a few hundred KB at most; past this it is not one.
MAX_JSON_BYTES = 16 * 1024 * 1024


class EstimateError(ValueError):
    """The model's files cannot be read for an estimate (a missing config, an unreadable header)."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True)
class ModelShape:
    """What an estimate needs of a model: its parameter tensors and a few config values."""

    tensors: tuple[Tensor, ...]
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int
    kv_dim: int

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)


@dataclass(frozen=True)
class TrainingSetup:
    method: str = "lora"  # "full" | "lora"
    precision: str = "bf16"  # the effective one: "bf16" | "fp16" | "fp32"
    on_gpu: bool = True
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 1024
    gradient_checkpointing: bool = False
    lora_r: int = 16
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    devices: int = 1
    objective: str = "sft"  # "dpo": two sequences a pair, and (full fine-tune) a frozen reference copy


@dataclass(frozen=True)
class Estimate:
    setup: TrainingSetup
    weights_bytes: int
    trainable_parameters: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    reference_bytes: int = 0  # DPO with a full fine-tune: the frozen copy of the base the loss compares against

    @property
    def total_bytes(self) -> int:
        return (
            self.reference_bytes
            + self.weights_bytes
            + self.gradients_bytes
            + self.optimizer_bytes
            + self.activations_bytes
            + self.overhead_bytes
        )

    def rows(self) -> list[tuple[str, int]]:
        reference = [("Reference model (frozen copy, DPO)", self.reference_bytes)] if self.reference_bytes else []
        return reference + [
            ("Weights", self.weights_bytes),
            ("Gradients", self.gradients_bytes),
            ("Optimizer states (AdamW)", self.optimizer_bytes),
            ("Activations (approximate)", self.activations_bytes),
            ("Overhead (CUDA context, allocator)", self.overhead_bytes),
        ]


def _read_json(path: Path, what: str) -> Any:
    """The JSON of the regular file `path`, read without waiting on a FIFO or device and at most MAX_JSON_BYTES.
    Links are followed (a cache snapshot's files are links to its blobs); what they lead to must be a regular file."""
    try:
        data = read_regular(path, MAX_JSON_BYTES)
    except OSError as exc:
        raise EstimateError(f"{what} cannot be read: {exc.strerror or exc}.") from exc
    if len(data) > MAX_JSON_BYTES:
        raise EstimateError(f"{what} cannot be read: it is larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB.")
    read = parse_bytes(data, MAX_JSON_BYTES)  # bounded in values too: nested empty lists cost gigabytes to parse
    if read.deferred:
        raise EstimateError(f"{what} cannot be read here: it holds more values than a model's configuration does.")
    if read.problem:
        raise EstimateError(f"{what} cannot be read: it {read.problem}.")
    return read.value


def _tensor_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.exists():
        data = _read_json(index, f"{index} (the safetensors index)")
        try:
            names = set(data["weight_map"].values())
        except (KeyError, TypeError, AttributeError) as exc:
            raise EstimateError(f"{index} is not a readable safetensors index: no weight_map ({exc}).") from exc
        files = [folder / str(name) for name in sorted(names)]
    return files


def _read_header(path: Path, tensors: dict[str, Tensor]) -> None:
    """Add the tensors of one safetensors file's header. safe_open reads only the header (bounded by safetensors
    itself) and maps the file; it is handed the descriptor of a file checked to be a regular one, so a FIFO or
    device swapped in for it is never opened by path."""
    fd = open_regular(path)
    try:
        head = os.pread(fd, 8, 0)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if size > MAX_HEADER_BYTES:
            raise EstimateError(
                f"{path} has a {size / 1024**2:.0f} MB safetensors header, more than a model's; it is not read here."
            )
        with safe_open(f"/proc/self/fd/{fd}", framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict: it has no __iter__)
                piece = f.get_slice(name)
                tensors[name] = Tensor(name, tuple(piece.get_shape()), piece.get_dtype())
    finally:
        os.close(fd)


def read_model_shape(folder: Path) -> ModelShape:
    """Tensor names, shapes and dtypes from the safetensors headers, and sizes from config.json. Every file is
    opened only when it is a regular file (EstimateError names one that is a FIFO, device or socket) and read
    with a bound, so a planted file can make the estimate fail but never wait or read without end."""
    config = _read_json(folder / "config.json", f"config.json in {folder}")
    if not isinstance(config, dict):
        raise EstimateError(f"config.json in {folder} cannot be read: it is not a JSON object.")
    files = _tensor_files(folder)
    if not files:
        raise EstimateError(f"{folder} has no .safetensors weights: the estimate reads their headers.")
    tensors: dict[str, Tensor] = {}
    for path in files:
        try:
            _read_header(path, tensors)
        except (SafetensorError, OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise EstimateError(f"{path.name} in {folder}: unreadable header: {reason}") from exc
    if config.get("tie_word_embeddings", True) and any(EMBEDDING_NAME.search(n) for n in tensors):
        tensors.pop("lm_head.weight", None)  # tied: one tensor in the model, whatever the file holds
    text = config.get("text_config") or config
    if not isinstance(text, dict):
        raise EstimateError(f"config.json in {folder}: text_config is not a JSON object.")
    try:
        hidden = int(text.get("hidden_size") or text.get("n_embd") or 0)
        heads = int(text.get("num_attention_heads") or text.get("n_head") or 1)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or (hidden // heads if heads else 0))
        return ModelShape(
            tensors=tuple(tensors.values()),
            hidden_size=hidden,
            num_layers=int(text.get("num_hidden_layers") or text.get("n_layer") or 0),
            intermediate_size=int(text.get("intermediate_size") or text.get("n_inner") or 4 * hidden),
            vocab_size=int(text.get("vocab_size") or 0),
            kv_dim=kv_heads * head_dim,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise EstimateError(f"config.json in {folder} has a size that is not a number: {exc}") from exc


def _is_linear(t: Tensor) -> bool:
    return len(t.shape) == 2 and t.name.endswith(".weight") and not EMBEDDING_NAME.search(t.name)


def lora_targets(shape: ModelShape, targets: str | tuple[str, ...]) -> list[Tensor]:
    """The weights peft wraps: every linear layer but the output head for all-linear, else those named."""
    linear = [t for t in shape.tensors if _is_linear(t)]
    if targets == "all-linear":
        return [t for t in linear if not t.name.startswith("lm_head")]
    wanted = set(targets)
    return [t for t in linear if t.name.rsplit(".", 2)[-2] in wanted]


def estimate(shape: ModelShape, setup: TrainingSetup) -> Estimate:
    compute = COMPUTE_BYTES[setup.precision] if setup.on_gpu else 4
    if setup.method == "full":
        weights = shape.parameters * 4
        trainable, tensors, trainable_bytes = shape.parameters, len(shape.tensors), 4
    else:
        base_bytes = compute if setup.on_gpu else 4
        weights = shape.parameters * base_bytes
        wrapped = lora_targets(shape, setup.lora_target_modules)
        trainable = sum(setup.lora_r * (t.shape[0] + t.shape[1]) for t in wrapped)
        tensors, trainable_bytes = 2 * len(wrapped), ADAPTER_BYTES
        weights += trainable * trainable_bytes
    gradients = trainable * trainable_bytes
    optimizer = 2 * trainable * trainable_bytes + tensors * OPTIMIZER_STEP_BYTES
    activations = activation_bytes(shape, setup, compute)
    # DPO's reference: with LoRA the base itself with the adapter disabled; a full fine-tune keeps a frozen copy,
    # in the compute dtype on a GPU.
    reference = shape.parameters * compute if setup.objective == "dpo" and setup.method == "full" else 0
    rest = weights + gradients + optimizer + activations + reference
    overhead = (CUDA_CONTEXT_BYTES if setup.on_gpu else 0) + int(rest * ALLOCATOR_SLACK)
    return Estimate(setup, weights, trainable, gradients, optimizer, activations, overhead, reference)


def activation_bytes(shape: ModelShape, setup: TrainingSetup, compute: int) -> int:
    """Per decoder block and token, what its backward pass needs kept: the inputs of both norms and of the four
    attention projections (q, k, v, o), the MLP's gate, up, activation and product, and its down input; with
    checkpointing only each block's input is kept and one block is recomputed at a time. Plus fp32 logits and
    their gradient. DPO runs each pair's chosen and rejected sequences in one batch: twice the tokens."""
    tokens = setup.batch_size * setup.max_seq_length * (2 if setup.objective == "dpo" else 1)
    h, i = shape.hidden_size, shape.intermediate_size
    per_block = (5 * h + 2 * shape.kv_dim + 4 * i) * compute
    if setup.gradient_checkpointing:
        blocks = shape.num_layers * h * compute + per_block
    else:
        blocks = shape.num_layers * per_block
    logits = 2 * shape.vocab_size * 4
    return tokens * (blocks + logits)


@dataclass(frozen=True)
class Remedy:
    label: str
    estimate: Estimate


def remedies(shape: ModelShape, current: Estimate) -> list[Remedy]:
    """Changes that lower the peak, each with its new estimate, biggest saving first."""
    setup = current.setup
    options: list[tuple[str, TrainingSetup]] = []
    if setup.method == "full":
        options.append(("Train with LoRA (r=16, all-linear)", replace(setup, method="lora", lora_r=16)))
    if not setup.gradient_checkpointing:
        options.append(("Turn on gradient checkpointing", replace(setup, gradient_checkpointing=True)))
    if setup.batch_size > 1:
        half = max(1, setup.batch_size // 2)
        accumulation = setup.gradient_accumulation_steps * setup.batch_size // half
        options.append(
            (
                f"batch_size {half} with gradient_accumulation_steps {accumulation} (same effective batch)",
                replace(setup, batch_size=half, gradient_accumulation_steps=accumulation),
            )
        )
    if setup.max_seq_length > 256:
        options.append(
            (f"max_seq_length {setup.max_seq_length // 2}", replace(setup, max_seq_length=setup.max_seq_length // 2))
        )
    found = [Remedy(label, estimate(shape, changed)) for label, changed in options]
    return sorted(found, key=lambda r: r.estimate.total_bytes)


def setup_for(method: str, hyperparameters: Any, *, on_gpu: bool, bf16: bool = True) -> TrainingSetup:
    """The setup a project's hyperparameters ask for, on a GPU (bf16 when supported, else fp16) or the CPU."""
    precision = hyperparameters.precision
    if not on_gpu:
        precision = "fp32"
    elif precision == "auto":
        precision = "bf16" if bf16 else "fp16"
    targets = hyperparameters.lora_target_modules
    return TrainingSetup(
        method=method,
        precision=precision,
        on_gpu=on_gpu,
        batch_size=hyperparameters.batch_size,
        gradient_accumulation_steps=hyperparameters.gradient_accumulation_steps,
        max_seq_length=hyperparameters.max_seq_length,
        gradient_checkpointing=hyperparameters.gradient_checkpointing,
        lora_r=hyperparameters.lora_r,
        lora_target_modules=targets if isinstance(targets, str) else tuple(targets),
        objective=getattr(hyperparameters, "objective", "sft"),
    )
