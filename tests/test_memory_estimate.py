"""The memory pre-flight: parameter, gradient and optimizer-state bytes are exact against the real tensors of the tiny
Llama after one AdamW step (full fine-tune and LoRA, on the CPU as the trainer trains there); the rest is checked for
what it must do (checkpointing and smaller batches lower the estimate, remedies come with their estimates)."""

from __future__ import annotations

import pytest
import torch

from projects.runs.scheduling.memory_estimate import (
    EstimateError,
    TrainingSetup,
    estimate,
    read_model_shape,
    remedies,
)


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def one_step(model, trainable) -> torch.optim.AdamW:
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25, 29]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return optimizer


def measured(model, optimizer) -> dict[str, int]:
    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    return {
        "weights": tensor_bytes(model.parameters()),
        "gradients": tensor_bytes(p.grad for p in model.parameters() if p.grad is not None),
        "optimizer": tensor_bytes(states),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def predicted(found) -> dict[str, int]:
    return {
        "weights": found.weights_bytes,
        "gradients": found.gradients_bytes,
        "optimizer": found.optimizer_bytes,
        "trainable": found.trainable_parameters,
    }


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)


def test_full_fine_tune_bytes_are_exact(tiny_llama_dir):
    model = load(tiny_llama_dir)
    optimizer = one_step(model, [p for p in model.parameters() if p.requires_grad])
    found = estimate(read_model_shape(tiny_llama_dir), TrainingSetup(method="full", precision="fp32", on_gpu=False))
    assert predicted(found) == measured(model, optimizer)


@pytest.mark.parametrize(("r", "targets"), [(8, "all-linear"), (4, ("q_proj", "v_proj"))])
def test_lora_bytes_are_exact(tiny_llama_dir, r, targets):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=16, target_modules=targets if isinstance(targets, str) else list(targets))
    model = get_peft_model(load(tiny_llama_dir), config)
    optimizer = one_step(model, [p for p in model.parameters() if p.requires_grad])
    setup = TrainingSetup(method="lora", precision="fp32", on_gpu=False, lora_r=r, lora_target_modules=targets)
    assert predicted(estimate(read_model_shape(tiny_llama_dir), setup)) == measured(model, optimizer)


def test_the_rest_moves_the_way_it_must_and_remedies_carry_their_estimates(tiny_llama_dir):
    shape = read_model_shape(tiny_llama_dir)
    base = TrainingSetup(method="full", precision="bf16", batch_size=8, max_seq_length=1024)
    full = estimate(shape, base)
    assert full.total_bytes == sum(size for _, size in full.rows())
    checkpointed = estimate(shape, TrainingSetup(**{**base.__dict__, "gradient_checkpointing": True}))
    assert checkpointed.activations_bytes < full.activations_bytes
    assert checkpointed.weights_bytes == full.weights_bytes
    found = remedies(shape, full)
    labels = [r.label for r in found]
    assert any("LoRA" in label for label in labels) and any("gradient checkpointing" in label for label in labels)
    assert "batch_size 4 with gradient_accumulation_steps 2 (same effective batch)" in labels
    assert "max_seq_length 512" in labels
    assert all(r.estimate.total_bytes < full.total_bytes for r in found)


def test_a_folder_without_readable_weights_is_a_clear_error(tmp_path, tiny_llama_dir):
    with pytest.raises(EstimateError, match="config.json"):
        read_model_shape(tmp_path)
    (tmp_path / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    with pytest.raises(EstimateError, match="no .safetensors weights"):
        read_model_shape(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(EstimateError, match="unreadable header"):
        read_model_shape(tmp_path)
