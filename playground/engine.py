"""The inference worker's side of the playground: the model it keeps loaded (one at a time, unloaded after
MTM_PLAYGROUND_IDLE_SECONDS without a message), the conversation it reads (playground.prompt fits it to the model),
and generation that writes its tokens to the Generation row as they come and stops once that row is gone or ended.
Runs only in a Celery worker process, never in the web process."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from mtm.shared.problems import Problem
from mtm.shared.text import storable
from playground import lifecycle, prompt
from playground.held_model import held
from playground.models import Generation, GenerationStatus, LoadedModel, TargetKind
from playground.params import GenerationParams
from playground.prompt import encode as encode  # importable from here too, beside history()
from playground.targets import CHAT_HINT, LoadSpec, TargetError, for_model, for_run
from projects.runs.folder import RunFolderRefused, open_folder_as_made

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    spec: LoadSpec
    model: Any
    tokenizer: Any
    device: str
    bytes: int
    row_id: int | None
    last_used: float = field(default_factory=time.monotonic)


_lock = threading.RLock()
_loaded: Loaded | None = None
_reaper: threading.Thread | None = None


def spec_for(generation: Generation) -> LoadSpec:
    conversation = generation.conversation
    if conversation.kind == TargetKind.RUN:
        if conversation.run is None:
            raise TargetError(
                Problem("run_gone", "The run this conversation talks to was deleted.", "Start a new conversation.")
            )
        return for_run(conversation.run)
    return for_model(conversation.model_name, conversation.revision)


def model_bytes(model: Any) -> int:
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def pinned(spec: LoadSpec) -> Iterator[LoadSpec]:
    """`spec` with a run's folders reached through a descriptor of the run folder the worker made, opened (and
    checked: projects.runs.folder) now: a folder swapped in after the check cannot be what is loaded."""
    if not spec.run_folder:
        yield spec
        return
    fd = open_folder_as_made(spec.run_folder, spec.run_folder_identity, spec.run_id, CHAT_HINT)
    try:
        inside = f"/proc/self/fd/{fd}"

        def through_fd(path: str | None) -> str | None:
            if path is None or os.path.commonpath([path, spec.run_folder]) != spec.run_folder:
                return path
            return inside + path[len(spec.run_folder) :]

        yield dataclasses.replace(
            spec,
            tokenizer_dir=through_fd(spec.tokenizer_dir) or spec.tokenizer_dir,
            model_dir=through_fd(spec.model_dir),
            adapter_dir=through_fd(spec.adapter_dir),
        )
    finally:
        os.close(fd)


def load(spec: LoadSpec) -> tuple[Any, Any, str]:
    """Tokenizer, model (eval mode, on the worker's device) and the device's name, loaded from the run's folder as it
    made it and the registry folder as it was resolved (playground.held_model)."""
    with pinned(spec) as reached, held(reached) as ready:
        return _load(ready)


def _load(spec: LoadSpec) -> tuple[Any, Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    trust = spec.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir, trust_remote_code=trust)
    if spec.model_dir:
        model = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype="auto", trust_remote_code=trust)
    else:
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(spec.base_model_path, dtype="auto", trust_remote_code=trust)
        model = PeftModel.from_pretrained(base, spec.adapter_dir)
    return tokenizer, model.to(device).eval(), device


def _unload_locked() -> None:
    global _loaded
    if _loaded is None:
        return
    row_id, _loaded = _loaded.row_id, None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    if row_id is not None:
        LoadedModel.objects.filter(pk=row_id).delete()


def _idle_reaper() -> None:
    """Unload the model once it has been idle for MTM_PLAYGROUND_IDLE_SECONDS (checked every few seconds)."""
    try:
        while True:
            time.sleep(min(5.0, max(0.5, settings.MTM_PLAYGROUND_IDLE_SECONDS / 4)))
            with _lock:
                if _loaded and time.monotonic() - _loaded.last_used >= settings.MTM_PLAYGROUND_IDLE_SECONDS:
                    log.info(
                        "playground: unloading %s after %ss idle",
                        _loaded.spec.label,
                        settings.MTM_PLAYGROUND_IDLE_SECONDS,
                    )
                    try:
                        _unload_locked()
                    except Exception:
                        log.warning("playground: unloading failed", exc_info=True)
                    finally:
                        connection.close()
    except Exception:  # never let the thread die silently
        log.exception("playground idle reaper stopped")


def _ensure_reaper() -> None:
    global _reaper
    if _reaper is None or not _reaper.is_alive():
        _reaper = threading.Thread(target=_idle_reaper, name="playground-idle-unload", daemon=True)
        _reaper.start()


def holds(spec: LoadSpec) -> bool:
    """Whether the model for `spec` is loaded now. Call with _lock held."""
    return _loaded is not None and _loaded.spec.key == spec.key


def loaded_for(spec: LoadSpec, worker_name: str, target: str = "") -> tuple[Loaded, float | None]:
    """The model for `spec`, loading it (and unloading another) when needed; the load's seconds, None when warm.
    `target` is the conversation target it is loaded for (playground.models.target_of). Call with _lock held."""
    global _loaded
    _ensure_reaper()
    if _loaded is not None and holds(spec):
        _loaded.last_used = time.monotonic()
        return _loaded, None
    _unload_locked()
    started = time.monotonic()
    tokenizer, model, device = load(spec)
    seconds = time.monotonic() - started
    size = model_bytes(model)
    row = LoadedModel.objects.create(
        worker_name=worker_name[:255],
        key=spec.key[:4096],
        target=target[:512],
        label=spec.label[:255],
        device=device,
        device_index=int(device.split(":")[1]) if device.startswith("cuda:") else None,
        bytes=size,
    )
    _loaded = Loaded(spec, model, tokenizer, device, size, row.pk)
    return _loaded, seconds


def earlier_turns(generation: Generation) -> list[prompt.Turn]:
    """The conversation's answered turns before this one, oldest first."""
    earlier = generation.conversation.turns.filter(pk__lt=generation.pk, status=GenerationStatus.SUCCEEDED)
    return [(turn.message, turn.reply) for turn in earlier.order_by("pk")]


def history(generation: Generation) -> list[dict[str, str]]:
    """The conversation so far as chat messages: the system prompt, each earlier answered turn, this message."""
    return prompt.messages_for(generation.conversation.system_prompt, earlier_turns(generation), generation.message)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class RowStreamer:
    """A transformers streamer that writes the answer so far to the Generation row at most every FLUSH seconds
    (and at the first token at once). It raises nothing: a failed write is retried at the next flush."""

    def __init__(self, generation_id: int, tokenizer: Any, stops: list[str], flush_seconds: float):
        self.generation_id, self.tokenizer, self.stops = generation_id, tokenizer, stops
        self.flush_seconds = flush_seconds
        self.ids: list[int] = []
        self.prompt_seen = False
        self.first_at: float | None = None
        self.last_flush = 0.0
        self.ended_elsewhere = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() hands the prompt over first
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            self.flush(first=True)
        elif now - self.last_flush >= self.flush_seconds:
            self.flush()

    def end(self) -> None:
        pass

    def text(self) -> str:
        return storable(cut_at_stop(self.tokenizer.decode(self.ids, skip_special_tokens=True), self.stops)[0])

    def flush(self, first: bool = False) -> None:
        self.last_flush = time.monotonic()
        fields: dict[str, Any] = {"reply": self.text(), "new_tokens": len(self.ids)}
        if first:
            fields["first_token_at"] = timezone.now()
        try:
            if not lifecycle.update_running(self.generation_id, **fields):
                self.ended_elsewhere = True
        except Exception:
            log.warning("playground: could not write generation %s", self.generation_id, exc_info=True)


def stop_when_ended(streamer: RowStreamer) -> Any:
    """Stopping criteria that end generation once the streamer's flush found the row gone (the answer or its
    conversation deleted) or no longer running (failed by the reaper): nobody reads the rest."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowEnded(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            rows = input_ids.shape[0]
            return torch.full((rows,), streamer.ended_elsewhere, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([RowEnded()])


def log_stopped(generation_id: int, new_tokens: int) -> None:
    log.info(
        "playground: generation %s stopped after %d new tokens: its row is gone (the answer or its conversation was "
        "deleted) or no longer running",
        generation_id,
        new_tokens,
    )


def _context_limit(model: Any) -> int | None:
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def generate_into(generation: Generation, loaded: Loaded, params: GenerationParams) -> None:
    """Generate the reply for `generation` with the loaded model, streaming it into the row; ends the row."""
    import torch

    tokenizer, model = loaded.tokenizer, loaded.model
    limit = _context_limit(model)
    system_prompt = generation.conversation.system_prompt
    fitted = prompt.fit(
        tokenizer,
        system_prompt,
        earlier_turns(generation),
        generation.message,
        limit,
        prompt.answer_room(limit, params.max_new_tokens) if limit is not None else 0,
    )
    prompt_tokens = fitted.prompt_tokens
    max_new = params.max_new_tokens
    if limit is not None:
        if prompt_tokens >= limit:
            lifecycle.fail(generation.pk, prompt.too_long(prompt_tokens, limit, bool(system_prompt.strip())))
            return
        max_new = min(max_new, limit - prompt_tokens)
    if not lifecycle.update_running(generation.pk, prompt_tokens=prompt_tokens, left_out_turns=fitted.left_out):
        log_stopped(generation.pk, 0)
        return
    inputs = fitted.inputs.to(loaded.device)
    streamer = RowStreamer(generation.pk, tokenizer, params.stop, settings.MTM_PLAYGROUND_FLUSH_SECONDS)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new,
        "pad_token_id": pad,
        "streamer": streamer,
        "stopping_criteria": stop_when_ended(streamer),
    }
    if params.temperature > 0:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if params.stop:
        kwargs.update(stop_strings=params.stop, tokenizer=tokenizer)
    with torch.inference_mode():
        model.generate(**inputs, **kwargs)
    if streamer.ended_elsewhere:
        log_stopped(generation.pk, len(streamer.ids))
        return
    raw = tokenizer.decode(streamer.ids, skip_special_tokens=True)
    reply, stopped = cut_at_stop(raw, params.stop)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = {tokenizer.eos_token_id} | set(configured if isinstance(configured, list) else [configured])
    if stopped:
        reason = "stop_string"
    elif streamer.ids and streamer.ids[-1] in eos:
        reason = "stop"
    elif max_new < params.max_new_tokens and len(streamer.ids) >= max_new:
        reason = "context"  # the model's context filled before the member's token limit was reached
    else:
        reason = "length"
    fields: dict[str, Any] = {"reply": storable(reply), "new_tokens": len(streamer.ids), "finish_reason": reason}
    if streamer.first_at is None:
        fields["first_token_at"] = timezone.now()
    lifecycle.succeed(generation.pk, **fields)


def _problem(code: str, message: str, hint: str) -> Problem:
    return Problem(code, message[:4000], hint)


def run_generation(generation_id: int, worker_name: str) -> None:
    """The whole turn on this worker: find the model's folders, load it unless it is loaded, generate."""
    generation = Generation.objects.select_related("conversation", "conversation__run").filter(pk=generation_id).first()
    if generation is None:
        log_stopped(generation_id, 0)
        return
    try:
        params = GenerationParams.model_validate(generation.params)
    except ValueError as exc:
        lifecycle.fail(generation_id, _problem("invalid_params", f"Stored settings are invalid: {exc}", ""))
        return
    try:
        spec = spec_for(generation)
    except TargetError as exc:
        lifecycle.fail(generation_id, exc.problem)
        return
    with _lock:
        if not holds(spec):
            lifecycle.charge_load(generation_id)  # a load tried and failed cost the others the model unloaded too
        try:
            loaded, load_seconds = loaded_for(spec, worker_name, generation.conversation.target)
        except RunFolderRefused as refused:  # swapped between the check above and the load (or a registry file)
            lifecycle.fail(generation_id, refused.problem)
            return
        except Exception as exc:
            lifecycle.fail(
                generation_id,
                _problem(
                    "model_load_failed",
                    f"The playground worker {worker_name} could not load {spec.label}: {type(exc).__name__}: {exc}",
                    "Check the model's folder (python manage.py validate_model NAME, or the run's validation report); "
                    "if memory ran out, ask staff for a worker with a larger device.",
                ),
            )
            return
        if not lifecycle.update_running(
            generation_id, cold=load_seconds is not None, load_seconds=load_seconds, device=loaded.device
        ):
            log_stopped(generation_id, 0)  # deleted or failed while the model loaded
            return
        try:
            generate_into(generation, loaded, params)
        except Exception as exc:
            log.exception("playground: generation %s failed", generation_id)
            lifecycle.fail(
                generation_id,
                _problem(
                    "generation_failed",
                    f"Generating with {spec.label} failed: {type(exc).__name__}: {exc}",
                    "Try other settings or a shorter message; the worker's log has the details.",
                ),
            )
        finally:
            loaded.last_used = time.monotonic()
            if loaded.row_id is not None:
                LoadedModel.objects.filter(pk=loaded.row_id).update(last_used_at=timezone.now())
