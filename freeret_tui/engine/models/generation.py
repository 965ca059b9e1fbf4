"""How an answer streams out of a loaded model (``stream_answer``): greedy decoding in a thread of its own, the text
handed over piece by piece, stopped when the reader closes the stream or sets its event, and kept out of loops by a
penalty on the tokens it has generated. torch and transformers are imported inside the function only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

# An answer's penalty on the tokens it has already generated (not the prompt's: quoting the sources costs nothing),
# for models whose generation config sets no penalty of their own. Greedy decoding with SmolLM2 fell into a loop (a
# 4-gram 3+ times) in 8 of 10 answers over a folder of READMEs, and in none with 1.15 or 1.3 on its own tokens;
# transformers' `repetition_penalty`, which counts the prompt too, left 1 of 10 at 1.1 and 1.2 but drew the answers
# away from their sources (throwaway runs; README, Features, Answers).
LOOP_PENALTY = 1.15


def stream_answer(model: Any, tok: Any, enc: Any, max_new_tokens: int,
                  stop: threading.Event | None = None) -> Iterator[str]:
    """The reply of ``model`` to the prompt ``enc`` (its inputs, on the model's device), decoded by ``tok``, as it
    is generated. The caller holds the model until the iterator ends or is closed; closing it stops the decoding."""
    import torch
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        StoppingCriteria,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )

    halt = threading.Event()

    class _StopRequested(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = halt.is_set() or (stop is not None and stop.is_set())
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    guard = LogitsProcessorList()
    if (model.generation_config.repetition_penalty or 1.0) == 1.0:  # else the model's own, as its authors set it
        prompt = enc["input_ids"].shape[-1]
        guard.append(RepetitionPenaltyLogitsProcessor(LOOP_PENALTY, prompt_ignore_length=prompt))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **enc,
                    streamer=streamer,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_StopRequested()]),
                    logits_processor=guard,
                )
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread and re-raised there
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=run, name="freeret-generate", daemon=True)
    worker.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:
        halt.set()
        worker.join()
    if failure:
        raise failure[0]
