"""Hugging Face implementation of the model interface, for any image-text-to-text or causal LM.

Read top to bottom: the weights (found and read with their tokenizer and processor by ``reader.py``; device, dtype,
batch size and preparing threads chosen by ``devices.py``), how a prompt becomes model inputs (prepared ahead in
threads on an accelerator), then the three FreeRet operations. torch and transformers are
imported only inside functions (here and in reader.py), so importing the engine or the CLI stays cheap.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from freeret_tui.engine.models.base import Pooling
from freeret_tui.engine.models.devices import choose_device, default_batch_size, default_prep_workers
from freeret_tui.engine.models.families import pre_mlp_module_name
from freeret_tui.engine.models.generation import stream_answer
from freeret_tui.engine.models.heap import release_freed
from freeret_tui.engine.models.presets import ModelSource
from freeret_tui.engine.models.processors import DEFAULT_IMAGE_MAX_PIXELS
from freeret_tui.engine.models.reader import token_spans_with
from freeret_tui.engine.models.turns import Turns
from freeret_tui.engine.models.weights import read_and_load
from freeret_tui.engine.pictures import load_image
from freeret_tui.engine.prompts import (
    CANDIDATE_LABEL,
    IMAGE_MARK,
    Framing,
    Side,
    Turn,
    answer_tokens,
    embedding_prompt,
    rerank_prompt,
)
from freeret_tui.engine.types import Content, Kind
from freeret_tui.errors import ModelLoadError, UnsupportedInputError


class _Captured(Exception):
    """Raised by the embedding hook to stop the forward pass once the vector is read: the last MLP, the final
    norm and the LM head never run (they cost time and, per the paper, hurt embedding quality)."""


_Method = TypeVar("_Method", bound=Any)

def _one_at_a_time(method: _Method) -> _Method:
    """Serialise forward passes: the search workers and the daemon thread share one model, whose embedding hook
    and rerank cache are per call. After each, what the pass freed goes back to the system (heap.py)."""
    @functools.wraps(method)
    def serialised(self: HFModel, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                return method(self, *args, **kwargs)
            finally:
                release_freed()

    return serialised  # type: ignore[return-value]


class HFModel:
    """One loaded model, safe to share between threads (one call runs at a time)."""

    def __init__(
        self,
        source: ModelSource,
        device: str = "auto",
        batch_size: int = 0,
        max_new_tokens: int = 256,
        dtype: str = "auto",
        image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS,
        pack_weights: bool = True,
    ):
        import torch

        self.name = source.spec
        self.rerank_useful = source.rerank_useful
        self.max_new_tokens = max_new_tokens
        self.device, torch_dtype = choose_device(device, dtype)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.prep_workers = default_prep_workers(self.device)
        self._prep_pool: tuple[int, ThreadPoolExecutor] | None = None  # (its threads, the pool)
        # Each preparing thread's own processor and tokenizer: a fast tokenizer shared between threads fails
        # ("Already borrowed") or pads wrongly, since every call resets its padding state (transformers#47085).
        self._prep_local = threading.local()
        self.dtype = str(torch_dtype).removeprefix("torch.")
        self._torch = torch
        self._lock = Turns()  # one call at a time, first asked first served (turns.py)
        try:
            reader, self._model = read_and_load(source, image_max_pixels, torch_dtype)
            self.supports_images, self._processor, self._tok = reader.supports_images, reader.processor, reader.tok
            self._model = self._model.to(self.device).eval()
            # Linear layers whose weights oneDNN packed once (packing.py): 1.1-1.3x the default's layers on a bf16 CPU;
            # in fp32, a wide language model's only.
            self.packed_layers = 0
            if pack_weights and self.device == "cpu":
                from freeret_tui.engine.models.packing import pack_linears

                self.packed_layers = pack_linears(self._model, torch_dtype)
            release_freed()  # the load's temporaries: a file's tensors read, then converted
        except ImportError as err:
            raise ModelLoadError(f"could not load model {source.spec!r}: {' '.join(str(err).split())}") from None
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"could not load model {source.spec!r}: {err}") from None
        except (AssertionError, RuntimeError) as err:  # torch's words for a device it lacks or that is full
            raise ModelLoadError(f"could not load model {source.spec!r} on {self.device}: {err}",
                                 ["pick another --device (auto chooses what this machine has)"]) from None
        config = reader.config
        text_config = config.get_text_config()
        layer = self._model.get_decoder().layers[-1]
        self._last_layer = layer
        self._pre_mlp = getattr(layer, pre_mlp_module_name(text_config.model_type))
        self.dim = int(text_config.hidden_size)
        # The pixels an image is read at (an index setting: its vectors depend on it); None for text-only models.
        self.image_max_pixels: int | None = image_max_pixels if self.supports_images else None
        # The key/value cache of the last rerank query's prompt start: (its token ids, the cache).
        self._query_prefix: tuple[tuple[int, ...], Any] | None = None
        # transformers 5.x renames `past_key_values` to `cache` (the old name goes in 5.40).
        forward = inspect.signature(self._model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward else "past_key_values"

    # -- prompts to tensors ---------------------------------------------------------------------------------

    def _render(self, turn: Turn) -> str:
        template = getattr(self._processor or self._tok, "chat_template", None)
        if not template:
            # No chat template (base models): plain text, which still ends on the instruction.
            mark = getattr(self._processor, "image_token", IMAGE_MARK)
            prefix = f"{turn.system}\n\n" if turn.system else ""
            return (self._tok.bos_token or "") + prefix + turn.text.replace(IMAGE_MARK, mark) + "\n"
        messages: list[dict[str, Any]] = []
        if self._processor is not None:
            parts: list[dict[str, str]] = []
            for n, segment in enumerate(turn.text.split(IMAGE_MARK)):
                if n:
                    parts.append({"type": "image"})
                if segment.strip():
                    parts.append({"type": "text", "text": segment})
            if turn.system:
                messages.append({"role": "system", "content": [{"type": "text", "text": turn.system}]})
            messages.append({"role": "user", "content": parts})
            return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if turn.system:
            messages.append({"role": "system", "content": turn.system})
        messages.append({"role": "user", "content": turn.text})
        return self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _inputs(self, turns: Sequence[Turn]) -> Any:
        return self._encode(turns, [self._render(t) for t in turns], self._processor, self._tok).to(self.device)

    def _encode(self, turns: Sequence[Turn], texts: list[str], processor: Any, tok: Any) -> Any:
        """The model's inputs for ``turns`` (rendered as ``texts``), in host memory, made with ``processor`` and
        ``tok``: this model's own, or a preparing thread's copies."""
        if any(t.images for t in turns):
            if not self.supports_images:
                raise UnsupportedInputError(f"model {self.name!r} is text-only and cannot read images")
            images = [[load_image(p) for p in t.images] for t in turns]
            return processor(text=texts, images=images, padding=True, return_tensors="pt", add_special_tokens=False)
        return tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)

    def _encode_in_worker(self, turns: Sequence[Turn], texts: list[str]) -> Any:
        local = self._prep_local
        if not hasattr(local, "parts"):
            local.parts = copy.deepcopy((self._processor, self._tok))  # one deepcopy keeps tok the processor's own
        return self._encode(turns, texts, *local.parts)

    def _prepared(self, groups: Sequence[Sequence[Turn]]) -> Iterator[Any]:
        """The inputs of each group in order, on the device; with ``prep_workers``, up to that many groups are
        prepared in threads while the caller runs the one before (a failure surfaces at its own group)."""
        if self.prep_workers < 1 or len(groups) < 2:
            for group in groups:
                yield self._inputs(group)
            return
        if self._prep_pool is None or self._prep_pool[0] != self.prep_workers:  # a benchmark changes the count
            if self._prep_pool is not None:
                self._prep_pool[1].shutdown(wait=False)
            self._prep_pool = (self.prep_workers, ThreadPoolExecutor(self.prep_workers, "freeret-prep"))
        pool = self._prep_pool[1]
        ahead: deque[Future[Any]] = deque()
        try:
            for group in groups:
                # Rendered here (a template, under a millisecond); decoding, resizing and tokenising in the pool.
                ahead.append(pool.submit(self._encode_in_worker, group, [self._render(t) for t in group]))
                if len(ahead) > self.prep_workers:
                    yield ahead.popleft().result().to(self.device)
            while ahead:
                yield ahead.popleft().result().to(self.device)
        finally:
            for future in ahead:  # the caller stopped early (an error): what has not started never will
                future.cancel()

    def prompt_token_ids(self, turn: Turn) -> list[int]:
        """The tokens the model reads for a text-only turn (benchmarks count costs with them)."""
        return list(self._tok(self._render(turn), add_special_tokens=False)["input_ids"])

    def _batches(self, turns: Sequence[Turn]) -> Iterator[list[int]]:
        """Indices in batches of similar length, text and image prompts apart (less padding, simpler inputs)."""
        order = sorted(range(len(turns)), key=lambda i: (len(turns[i].images), len(turns[i].text)))
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) == self.batch_size or bool(turns[batch[0]].images) != bool(turns[i].images)):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    # -- stage 1: embeddings --------------------------------------------------------------------------------

    @_one_at_a_time
    def embed(
        self,
        items: Sequence[Content],
        side: Side,
        kinds: Sequence[Kind] | None = None,
        pooling: Pooling = Pooling.PREMLP,
    ) -> np.ndarray:
        kinds = kinds or [Kind.IMAGE if c.is_image else Kind.TEXT for c in items]
        turns = [embedding_prompt(c, side, k) for c, k in zip(items, kinds, strict=True)]
        out = np.empty((len(turns), self.dim), dtype=np.float32)
        batches = list(self._batches(turns))
        for batch, enc in zip(batches, self._prepared([[turns[i] for i in b] for b in batches]), strict=True):
            out[batch] = self._embed_batch(enc, pooling)
        return out

    def _embed_batch(self, enc: Any, pooling: Pooling) -> np.ndarray:
        torch = self._torch
        captured: list[Any] = []

        def before(_module: Any, args: tuple, kwargs: dict) -> None:
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _Captured

        def after(_module: Any, _args: tuple, _kwargs: dict, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Captured

        if pooling is Pooling.PREMLP:
            handle = self._pre_mlp.register_forward_pre_hook(before, with_kwargs=True)
        else:
            handle = self._last_layer.register_forward_hook(after, with_kwargs=True)
        try:
            with torch.inference_mode():
                self._model(**enc, use_cache=False)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"{self.name}: the embedding hook never ran; its family needs a row in families.py")
        vectors = torch.nn.functional.normalize(captured[0][:, -1, :].float(), dim=-1)
        return vectors.cpu().numpy()

    # -- stage 2: rerank ------------------------------------------------------------------------------------

    def _first_token_id(self, text: str) -> int:
        return int(self._tok.encode(text, add_special_tokens=False)[0])

    def rerank(self, query: Content, candidates: Sequence[Content], framing: Framing = Framing.MC) -> list[float]:
        return self.rerank_pairs([(query, c) for c in candidates], framing)

    @_one_at_a_time
    def rerank_pairs(self, pairs: Sequence[tuple[Content, Content]], framing: Framing = Framing.MC) -> list[float]:
        """P(match) of each (query, candidate) pair: a served model batches several people's queries at once."""
        option_ids = [self._first_token_id(t) for t in answer_tokens(framing)]
        turns = [rerank_prompt(query, c, framing) for query, c in pairs]
        probs = [0.0] * len(turns)
        rest = list(range(len(turns)))
        if self.device == "cpu":
            # On a CPU every token costs the same batched or not, so the prompt's start up to the candidate (chat
            # template, task line, query) runs once per query, kept between calls, and each candidate runs only
            # its own tokens (benchmarks/rerank_cost.py).
            text_only = [i for i in rest if not turns[i].images]
            for i in text_only:
                probs[i] = self._score_after_query_prefix(turns[i], option_ids)
            rest = [i for i in rest if turns[i].images]
        for batch in self._batches([turns[i] for i in rest]):
            for i, p in zip(batch, self._score([turns[rest[j]] for j in batch], option_ids), strict=True):
                probs[rest[i]] = p
        return probs

    def _score(self, turns: Sequence[Turn], option_ids: list[int]) -> list[float]:
        """P(first option) at the last position of each prompt, in one padded batch."""
        torch = self._torch
        enc = self._inputs(turns)
        with torch.inference_mode():
            # logits_to_keep=1: the LM head runs on the answer position only, not the whole prompt.
            logits = self._model(**enc, use_cache=False, logits_to_keep=1).logits[:, -1, :]
        return torch.softmax(logits[:, option_ids].float(), dim=-1)[:, 0].tolist()

    def _score_after_query_prefix(self, turn: Turn, option_ids: list[int]) -> float:
        """``_score`` of one text-only rerank prompt, running only the tokens after the query's part when that
        part's key/value cache is at hand (copied per candidate: a few MB), else computing and keeping it."""
        import copy

        torch = self._torch
        text = self._render(turn)
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        label = text.find(CANDIDATE_LABEL)
        # The tokens wholly before the end of the candidate's label; the last token always runs (it is scored).
        end = label + len(CANDIDATE_LABEL)
        shared = min(sum(1 for _, stop in offsets if stop <= end), len(ids) - 1)
        if label < 0 or shared < 1:
            return self._score([turn], option_ids)[0]
        name = self._cache_kwarg
        key = tuple(ids[:shared])
        # Positions are passed explicitly: a text prompt's are 0..n-1 in every family, while M-RoPE models (Qwen-VL)
        # would otherwise offset the tail by the `rope_deltas` they keep from their last prefill, an image's maybe.
        def positions(start: int, stop: int) -> Any:
            return torch.arange(start, stop, device=self.device)[None]

        with torch.inference_mode():
            if self._query_prefix is None or self._query_prefix[0] != key:
                prefix = torch.tensor([ids[:shared]], device=self.device)
                out = self._model(input_ids=prefix, position_ids=positions(0, shared), use_cache=True,
                                  logits_to_keep=1)
                self._query_prefix = (key, getattr(out, name))
            tail = torch.tensor([ids[shared:]], device=self.device)
            cache = copy.deepcopy(self._query_prefix[1])
            logits = self._model(input_ids=tail, position_ids=positions(shared, len(ids)), use_cache=True,
                                 logits_to_keep=1, **{name: cache}).logits[:, -1, :]
        return float(torch.softmax(logits[:, option_ids].float(), dim=-1)[0, 0])

    # -- answers --------------------------------------------------------------------------------------------

    def generate(
        self, system: str, text: str, images: Sequence[Path], stop: threading.Event | None = None
    ) -> Iterator[str]:
        """Stream the reply; the model stays held (other callers wait) until the stream ends or is closed."""
        with self._lock:
            try:
                enc = self._inputs([Turn(text=text, images=tuple(images), system=system)])
                yield from stream_answer(self._model, self._tok, enc, self.max_new_tokens, stop)
            finally:
                release_freed()  # the prompt's activations and the key/value cache, freed in the answer's thread

    # -- chunking support -----------------------------------------------------------------------------------

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        with self._lock:  # the tokenizer is not safe to share between threads (transformers#47085)
            return token_spans_with(self._tok, text)
