"""What a preset costs on this machine at its real size: the architecture built from the published config with
random weights (speed and memory do not depend on weight values; no weights can be downloaded here), saved as a
hub snapshot is laid out and loaded through the product's own loader (``load_model(DIR)``), then timed on the
product's own prompts.

Measured per preset, in one run: load time; seconds per photo (the sample photos, at the index's image budget),
per scanned page (a rendered A4 page at the same budget), per 256-token passage, per query; a top-10 rerank
over passages and over photos; answer tokens/s; peak RSS against the weights' own size. Each embedding forward
is split into the vision tower and the language model (forward hooks) and set against this CPU's matmul roofline
measured in the same run (``F.linear`` at the model's own shapes, in the model's dtype). From the rates: the
projected time to index 10k photos and 5k notes (two passages each). With ``--device cuda`` the same run on a GPU,
plus seconds per photo and per passage at each of ``--batches`` (a GPU needs batches to fill up; the projection
takes the best), with each of ``--prep-workers`` threads preparing the next batches meanwhile, and the GPU's peak
memory against the weights, overall and at each batch size.

    python benchmarks/preset_cost.py [--preset default|fast|strong] [--dtype auto|float32|bfloat16]
        [--image-max-pixels N] [--photos N]      # JSON: benchmarks/preset_cost_<preset>.json
    python benchmarks/preset_cost.py --device cuda --batches 1,2,4,8,16,32,64 --prep-workers 0,1,2,4 [--preset ...]
        [--out PATH]                             # JSON: benchmarks/preset_cost_<preset>_gpu.json, or PATH
    python benchmarks/preset_cost.py --plot-only   # benchmarks/preset_cost.png from the JSON files already written
    python benchmarks/preset_cost.py --load-only --dtype float32 [--preset ...] [--model-dir DIR] [--out PATH]
                                                   # the load alone: its time, and memory sampled during it

Architectures, from the published config.json of each hub model:
- default, Qwen/Qwen2-VL-2B-Instruct: language model of Qwen2-1.5B's shape (hidden 1536, MLP 8960, 28 layers,
  12 heads, 2 KV heads, vocab 151,936, tied embeddings, M-RoPE sections 16/24/24); vision tower 32 blocks of
  1280 wide, 16 heads, MLP ratio 4, 14-px patches, 2x2 merge, out 1536.
- fast, HuggingFaceTB/SmolVLM-256M-Instruct: Idefics3 with SmolLM2-135M's shape (hidden 576, MLP 1536, 30
  layers, 9 heads, 3 KV heads, vocab 49,280) and a SigLIP-B/16 tower at 512 px (768 wide, 12 layers, 12 heads,
  MLP 3072), pixel-shuffle scale 4 (64 image tokens a 512-px tile).
- strong, Qwen/Qwen2.5-VL-7B-Instruct: hidden 3584, MLP 18944, 28 layers, 28 heads, 4 KV heads, vocab 152,064;
  vision 32 blocks of 1280 (SwiGLU 3420, window 112, full attention in blocks 7/15/23/31), out 3584.
The tokenizer is a byte-level BPE trained here on the standard library's docstrings (32k merges), so prompts
have about the token counts of a real English tokenizer; the real vocabulary's size is kept in the embedding.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import stdlib_beir
from throughput import gemm_flops, sync

from freeret_tui.engine.prompts import Side, answer_prompt, embedding_prompt
from freeret_tui.engine.types import Content, Kind

PHOTOS = HERE.parent.parent / "shared" / "samples" / "photos"
# A person's library, for the projection: photos, and notes of about two 256-token passages each.
LIBRARY = {"photos": 10_000, "notes": 5_000, "passages_per_note": 2}


def _tokenizer(special: list[str], chat_template: str, eos: str):  # -> PreTrainedTokenizerFast
    """A 32k byte-level BPE trained on the standard library's docstrings (an English tokenizer's token counts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in (stdlib_beir._docstring(p) for p in sorted(Path(json.__file__).parents[1].rglob("*.py")))
             if t]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=32_000, special_tokens=base + special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token=eos, pad_token="<pad>",
                                   unk_token="<|endoftext|>", additional_special_tokens=special,
                                   chat_template=chat_template)


def _random(model_class: type, config: Any, out: Path, device: str) -> None:
    """Random weights in bf16 (an fp32 build of the 7B model alone would need 33 GB), saved as safetensors; drawn
    on ``device`` (a GPU draws 8B random numbers in a second, 16 CPU cores in minutes)."""
    import torch

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(out)
    del model


def build_qwen(out: Path, strong: bool, device: str = "cpu") -> Path:
    import torch  # noqa: F401
    from tiny_models import _QWEN_CHAT_TEMPLATE, _QWEN_SPECIAL
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _tokenizer(_QWEN_SPECIAL, _QWEN_CHAT_TEMPLATE, "<|im_end|>")
    names = ("vision_start", "vision_end", "image", "video")
    ids = dict(zip(names, tok.convert_tokens_to_ids(_QWEN_SPECIAL), strict=True))
    common = {"image_token_id": ids["image"], "video_token_id": ids["video"],
              "vision_start_token_id": ids["vision_start"], "vision_end_token_id": ids["vision_end"],
              "pad_token_id": tok.pad_token_id}
    if strong:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        text = {"vocab_size": 152_064, "hidden_size": 3584, "intermediate_size": 18_944, "num_hidden_layers": 28,
                "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128_000,
                "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
        vision = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                  "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
        _random(Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common),
                out, device)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        text = {"vocab_size": 151_936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 32_768,
                "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
        vision = {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "hidden_size": 1536,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        _random(Qwen2VLForConditionalGeneration, Qwen2VLConfig(text_config=text, vision_config=vision, **common), out,
                device)
    tok.save_pretrained(out)
    # The published processor: 14-px patches, 2x2 merge, 3,136 to 12,845,056 pixels (the product caps it lower).
    Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, min_pixels=3136, max_pixels=12_845_056).save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": _QWEN_CHAT_TEMPLATE}))
    return out


def build_smolvlm(out: Path, device: str = "cpu") -> Path:
    from tiny_models import _CHAT_TEMPLATE
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    special += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _tokenizer(special, _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>"), "<end_of_utterance>")
    text = {"model_type": "llama", "vocab_size": 49_280, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "max_position_embeddings": 8192, "rope_theta": 100_000, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 512, "patch_size": 16}
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=4,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
                            tie_word_embeddings=True)
    _random(Idefics3ForConditionalGeneration, config, out, device)
    # The published processor: photos resized to 2048 px on the long side, split into 512-px tiles (the product's
    # image budget picks fewer tiles), 64 image tokens a tile.
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
                                                do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=64)
    processor.chat_template = tok.chat_template
    processor.save_pretrained(out)
    return out


class Split:
    """Wall time spent inside the vision tower, and the patches it read, during the forwards run meanwhile (on a
    GPU each end waits for the queued work, so the time is the tower's own). Off (``active`` False) while the
    product's own pipeline is timed: its waits would hold the GPU's queue empty."""

    def __init__(self, module: Any, patch: int, device: str):
        self.seconds = 0.0
        self.patches = 0
        self.active = True
        self._patch = patch
        self._start = 0.0
        self._device = device
        module.register_forward_pre_hook(self._pre, with_kwargs=True)
        module.register_forward_hook(self._post)

    def _pre(self, _module: Any, args: tuple, kwargs: dict) -> None:
        if not self.active:
            return
        sync(self._device)
        self._start = time.perf_counter()
        pixels = args[0] if args else kwargs.get("pixel_values", kwargs.get("hidden_states"))
        if pixels.dim() == 2:  # Qwen: one row per patch already
            self.patches += int(pixels.shape[0])
        else:  # SigLIP: (tiles, channels, height, width)
            self.patches += int(pixels.shape[0]) * (pixels.shape[-2] // self._patch) * (pixels.shape[-1] // self._patch)

    def _post(self, *_args: Any) -> None:
        if not self.active:
            return
        sync(self._device)
        self.seconds += time.perf_counter() - self._start


def _rss_mb() -> dict[str, int]:
    """This process's resident memory now and its peak so far, in MiB as ``peak_rss_mb`` (the peak only grows: read
    after each phase, it says which phase set it)."""
    now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return {"now": round(now), "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


class LoadSampler:
    """This process's resident memory sampled every 5 ms while a load runs (``ru_maxrss`` gives the peak only):
    the sample at the highest RSS, split into anonymous memory and mapped files, in MiB."""

    def __init__(self) -> None:
        self.peak = {"rss": 0, "anon": 0, "file": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
        while not self._stop.wait(0.005):
            sample = {fields[key]: int(value.split()[0]) // 1024 for key, _, value in
                      (line.partition(":") for line in Path("/proc/self/status").read_text().splitlines())
                      if key in fields}
            if sample["rss"] > self.peak["rss"]:
                self.peak = sample

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _timed(call: Any, repeats: int = 1) -> float:
    call()  # warm-up: the first call pays one-off costs (allocations, oneDNN kernel choice)
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats


def _page(work: Path, passage: str) -> Path:
    """An A4 page at 150 dpi with text on it, as a scanner gives one (the product reads it at the image budget)."""
    from PIL import Image, ImageDraw

    page = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(page)
    words = passage.split()
    for line in range(60):
        draw.text((90, 90 + line * 26), " ".join(words[(line * 12) % len(words):][:12]), fill="black")
    path = work / "page.png"
    page.save(path)
    return path


def measure(spec: str, dtype: str, budget: int, photos: list[Path], work: Path, device: str,
            batches: list[int], workers: list[int], load_only: bool = False) -> dict[str, Any]:
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    from freeret_tui.engine.models import load_model

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The model's own modelling code, imported before the load: what any size of it costs (the load would import it).
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(transformers.AutoConfig.from_pretrained(spec))]
    phases: dict[str, Any] = {"imports": _rss_mb()}
    started = time.perf_counter()
    with LoadSampler() as sampler:
        model = load_model(spec, device=device, dtype=dtype, image_max_pixels=budget, max_new_tokens=32)
        sync(device)
    load_s = time.perf_counter() - started
    phases["loaded"] = {**_rss_mb(), "peak_during_load": sampler.peak}
    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    hf = model._model
    weights = sum(p.numel() * p.element_size() for p in hf.parameters())
    decoder = hf.get_decoder()
    visual = hf.model.visual if hasattr(hf.model, "visual") else hf.model.vision_model
    lm_params = _params(decoder.layers) - _params(decoder.layers[-1].mlp)
    vis_params = _params(visual) + (_params(hf.model.connector) if hasattr(hf.model, "connector") else 0)
    vision_config = hf.config.vision_config
    if load_only:
        return {"model": spec, "device": device, "dtype": model.dtype, "load_s": round(load_s, 1),
                "weights_mb": round(weights / 2**20), "rss_before_load_mb": round(rss_before),
                "rss_mb_by_phase": phases}
    split = Split(visual, int(vision_config.patch_size), device)
    hidden = hf.config.get_text_config().hidden_size
    intermediate = hf.config.get_text_config().intermediate_size
    # The best of the model's own projection shapes and a square one (a short run of one shape read 40 % low); a GPU
    # reaches its peak only on large products, so it gets a large square too.
    shapes = [(256, hidden, intermediate), (1024, 1280, 5120), (2048, 2048, 2048)] + [(8192, 8192, 8192)] * gpu
    roofline = max(gemm_flops(str(hf.dtype).removeprefix("torch."), *shape, repeats=10, device=device)
                   for shape in shapes)

    corpus = stdlib_beir.build(work / "beir", limit=60, min_words=180, max_words=400)
    texts = [json.loads(line)["text"] for line in (corpus / "corpus.jsonl").read_text().splitlines()]
    count = max([10, *batches])
    joined = " ".join(texts)
    # The standard library has ~16k tokens of long docstrings: a sweep's 64 passages read them more than once.
    joined = " ".join([joined] * -(-(256 * count + 1) // len(model.token_spans(joined))))
    spans = model.token_spans(joined)
    passages = [joined[spans[i][0]:spans[i + 255][1]] for i in range(0, 256 * count, 256)]  # 256 tokens each

    def lm_tokens(content: Content, kind: Kind) -> int:
        """Tokens the language model reads for one item: the prompt with each image expanded to its tokens."""
        return int(model._inputs([embedding_prompt(content, Side.CANDIDATE, kind)])["input_ids"].shape[1])

    out: dict[str, Any] = {"model": spec, "device": device, "dtype": model.dtype, "image_max_pixels": budget,
                           "load_s": round(load_s, 1),
                           "weights_gb": round(weights / 1e9, 2), "lm_params_embedding_pass": lm_params,
                           "vision_params": vis_params, "roofline_tflops": round(roofline / 1e12, 3)}

    # Photos, one at a time (decode, processor, vision tower, language model, normalised vector).
    per_photo = []
    for photo in photos:
        item = [Content(image=photo)]
        model.embed(item, Side.CANDIDATE, [Kind.IMAGE])  # warm-up: new shapes pay for oneDNN's kernel choice
        split.seconds, split.patches = 0.0, 0
        started = time.perf_counter()
        model.embed(item, Side.CANDIDATE, [Kind.IMAGE])
        seconds = time.perf_counter() - started
        vision_s, patches = split.seconds, split.patches
        turn = embedding_prompt(item[0], Side.CANDIDATE, Kind.IMAGE)
        prep_s = _timed(lambda t=turn: model._inputs([t]))  # decode, resize, patchify, tokenise
        tokens = lm_tokens(item[0], Kind.IMAGE)
        lm_s = seconds - vision_s - prep_s
        per_photo.append({"photo": photo.name, "seconds": round(seconds, 2), "prep_s": round(prep_s, 2),
                          "vision_s": round(vision_s, 2), "lm_s": round(lm_s, 2), "patches": patches,
                          "lm_tokens": tokens,
                          "lm_roofline_pct": round(100 * 2 * lm_params * tokens / lm_s / roofline, 1),
                          "vision_roofline_pct": round(100 * 2 * _params(visual) * patches / vision_s / roofline, 1)
                          if vision_s else None})
        print(json.dumps(per_photo[-1]), file=sys.stderr)
    out["photos"] = per_photo
    phases["photos"] = _rss_mb()
    out["seconds_per_photo"] = round(sum(p["seconds"] for p in per_photo) / len(per_photo), 2)

    page = _page(work, texts[0])
    out["seconds_per_page"] = round(_timed(lambda: model.embed([Content(image=page)], Side.CANDIDATE, [Kind.PAGE])), 2)
    phases["page"] = _rss_mb()
    out["seconds_per_passage"] = round(_timed(
        lambda: model.embed([Content(text=passages[0])], Side.CANDIDATE, [Kind.TEXT]), 2), 2)
    batch = model.batch_size
    first_batch = [Content(text=p) for p in passages[:batch]]
    out[f"seconds_per_passage_batch{batch}"] = round(_timed(
        lambda: model.embed(first_batch, Side.CANDIDATE, [Kind.TEXT] * batch)) / batch, 4)
    query = Content(text="the receipt for the bike repair in spring")
    out["seconds_per_query"] = round(_timed(lambda: model.embed([query], Side.QUERY, [Kind.TEXT]), 3), 3)
    phases["passages_and_query"] = _rss_mb()
    out["rerank_top10_passages_s"] = round(_timed(lambda: model.rerank(query, [Content(text=p) for p in passages])), 1)
    phases["rerank_passages"] = _rss_mb()
    pictures = [Content(image=p) for p in (photos * 2)[:10]]
    out["rerank_top10_photos_s"] = round(_timed(lambda: model.rerank(Content(text="a cat"), pictures)), 1)
    phases["rerank_photos"] = _rss_mb()

    # Answers: the first piece through the product's streaming generate; the decode rate from a fixed number of
    # new tokens (random weights stop at arbitrary points, and a streamed piece may hold several tokens).
    stop = threading.Event()
    system = "Answer from the sources."
    prompt = "\n".join(f"[{n}] {p}" for n, p in enumerate(passages[:5], 1)) + "\nQuestion: what changed?"
    started = time.perf_counter()
    next(iter(model.generate(system, prompt, [], stop)), None)  # random weights may stop at once: no piece at all
    first_piece = time.perf_counter() - started
    stop.set()
    enc = model._inputs([answer_prompt("what changed?", [Content(text=p) for p in passages[:5]])])

    def decode(n: int) -> float:
        with torch.inference_mode():
            return _timed(lambda: hf.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False))

    out["answer"] = {"prompt_tokens": int(enc["input_ids"].shape[1]), "first_piece_s": round(first_piece, 1),
                     "tokens_per_s": round(16 / (decode(17) - decode(1)), 2)}
    phases["answer"] = _rss_mb()

    per_photo_s, per_passage = out["seconds_per_photo"], out[f"seconds_per_passage_batch{batch}"]
    gpu_peak = torch.cuda.max_memory_allocated() if gpu else 0  # the sweep resets it for each batch size
    if batches:
        out["batches"] = sweep(model, split, photos, passages, batches, lm_tokens, lm_params, roofline, device,
                               workers)
        per_photo_s = min(min(row["seconds_per_photo"], *row.get("seconds_per_photo_by_prep_workers", {}).values())
                          for row in out["batches"])
        per_passage = min(min(row["seconds_per_passage"],
                              *row.get("seconds_per_passage_by_prep_workers", {}).values())
                          for row in out["batches"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = round(peak)
    out["rss_before_load_mb"] = round(rss_before)
    out["rss_mb_by_phase"] = phases
    if gpu:  # the weights live in the GPU's memory: its peak is the one that counts
        out["gpu"] = torch.cuda.get_device_name()
        gpu_peak = max(gpu_peak, torch.cuda.max_memory_allocated(),
                       *(int(row["gpu_peak_gb"] * 1e9) for row in out.get("batches", [])))
        out["gpu_peak_gb"] = round(gpu_peak / 1e9, 2)
        out["gpu_peak_over_weights"] = round(gpu_peak / weights, 2)
    else:
        out["peak_rss_over_weights"] = round((peak - rss_before) * 2**20 / weights, 2)
        # The same less the modelling code's import, which is the same whatever the model's size.
        out["peak_rss_over_weights_after_imports"] = round((peak - phases["imports"]["now"]) * 2**20 / weights, 2)
    hours = (LIBRARY["photos"] * per_photo_s + LIBRARY["notes"] * LIBRARY["passages_per_note"] * per_passage) / 3600
    out["projected_hours"] = {**LIBRARY, "hours": round(hours, 3)}  # a GPU's is minutes: 0.1 h would hide it
    out["torch_threads"] = torch.get_num_threads()
    out["versions"] = {"torch": torch.__version__, "transformers": __import__("transformers").__version__}
    return out


def sweep(model: Any, split: Split, photos: list[Path], passages: list[str], batches: list[int], lm_tokens: Any,
          lm_params: int, roofline: float, device: str, workers: list[int]) -> list[dict[str, Any]]:
    """Seconds per photo and per 256-token passage at each batch size, over as many items as the largest batch
    (the sample photos repeated), through ``model.embed`` as the indexer calls it.

    First with each batch prepared in line, a photo's time split into preparing its inputs (decode, resize,
    patchify, tokenise, copy to the device), the vision tower and the rest (the language model), the language
    model's share of the roofline counted on the tokens it read. Then, for each count in ``workers``, the same
    items with that many threads preparing the next batches while the device runs one (``prep_workers``; 0 is
    the in-line path without the split's waits), timed end to end. On a GPU, each batch size's peak memory."""
    import torch

    n = max(batches)
    sets = {"photo": ([Content(image=p) for p in (photos * n)[:n]], Kind.IMAGE),
            "passage": ([Content(text=p) for p in passages[:n]], Kind.TEXT)}
    tokens = {name: sum(lm_tokens(c, kind) for c in items) for name, (items, kind) in sets.items()}
    gpu = device.startswith("cuda")
    rows = []
    for size in batches:
        model.batch_size = size
        model.prep_workers = 0
        split.active = True
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        row: dict[str, Any] = {"batch": size}
        for name, (items, kind) in sets.items():
            model.embed(items[:size], Side.CANDIDATE, [kind] * size)  # warm-up at this batch's shapes
            split.seconds, split.patches = 0.0, 0
            sync(device)
            started = time.perf_counter()
            model.embed(items, Side.CANDIDATE, [kind] * n)
            seconds = time.perf_counter() - started
            vision_s = split.seconds
            turns = [embedding_prompt(c, Side.CANDIDATE, kind) for c in items]
            prep_s = sum(_timed(lambda t=turns[i:i + size]: model._inputs(t)) for i in range(0, n, size))
            lm_s = seconds - vision_s - prep_s
            row[f"seconds_per_{name}"] = round(seconds / n, 4)
            row[f"{name}_prep_s"] = round(prep_s / n, 4)
            if name == "photo":
                row["photo_vision_s"] = round(vision_s / n, 4)
            row[f"{name}_lm_s"] = round(lm_s / n, 4)
            row[f"{name}_lm_roofline_pct"] = (round(100 * 2 * lm_params * tokens[name] / lm_s / roofline, 1)
                                              if lm_s > 0 else None)  # a GPU's forward may hide under the prep
        split.active = False
        for count in workers:
            model.prep_workers = count
            for name, (items, kind) in sets.items():
                # Warm-up: two batches start the threads and their processor copies; the shapes ran above.
                model.embed(items[: 2 * size], Side.CANDIDATE, [kind] * min(n, 2 * size))
                sync(device)
                started = time.perf_counter()
                model.embed(items, Side.CANDIDATE, [kind] * n)
                row.setdefault(f"seconds_per_{name}_by_prep_workers", {})[str(count)] = round(
                    (time.perf_counter() - started) / n, 4)
        if gpu:
            row["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    split.active = True
    return rows


def plot(out: Path) -> None:
    """Seconds per photo split into decode, vision tower and language model, and hours for the library, for every
    preset measured so far (the preset_cost_<preset>.json files beside this script)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [json.loads(p.read_text()) for name in ("fast", "default", "strong")
               if (p := HERE / f"preset_cost_{name}.json").exists()]
    labels = [f"{r['preset']}\n{r['weights_gb']} GB" for r in reports]
    parts = {name: [sum(p[key] for p in r["photos"]) / len(r["photos"]) for r in reports]
             for name, key in (("decode + resize", "prep_s"), ("vision tower", "vision_s"), ("language model", "lm_s"))}
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4), dpi=120)
    bottom = [0.0] * len(reports)
    for name, values in parts.items():
        left.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_ylabel("seconds per photo (bf16, 2-core CPU)")
    left.legend()
    right.bar(labels, [r["projected_hours"]["hours"] for r in reports], color="tab:gray")
    right.set_ylabel("hours to index 10k photos + 5k notes")
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("What each preset costs at its real size (random weights, published architectures)")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("default", "fast", "strong"), default="default")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--image-max-pixels", type=int, default=200_704)
    parser.add_argument("--photos", type=int, default=8, help="how many of the sample photos")
    parser.add_argument("--photo-dir", type=Path, default=PHOTOS, help="where the photos are (default: the samples)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: then JSON preset_cost_<preset>_gpu.json")
    parser.add_argument("--batches", type=lambda v: [int(b) for b in v.split(",")], default=[],
                        help="batch sizes to sweep, e.g. 1,2,4,8,16,32,64 (a GPU needs batches to fill up)")
    parser.add_argument("--prep-workers", type=lambda v: [int(w) for w in v.split(",")], default=[],
                        help="with --batches: also time each batch size with these many threads preparing the next "
                             "batches, e.g. 0,1,2,4 (the product's prep_workers)")
    parser.add_argument("--out", type=Path, help="write the JSON here instead (a repeat beside the kept run)")
    parser.add_argument("--load-only", action="store_true",
                        help="measure the load alone (time, memory during it); JSON on stdout and to --out only")
    parser.add_argument("--model-dir", type=Path,
                        help="build the model into this folder once and keep it (later runs reuse it)")
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # the child that builds the model
    parser.add_argument("--plot-only", action="store_true", help="redraw preset_cost.png from the JSON files")
    args = parser.parse_args()
    if args.plot_only:
        plot(HERE / "preset_cost.png")
        return
    if args.build_into:
        if args.preset == "fast":
            build_smolvlm(args.build_into, args.device)
        else:
            build_qwen(args.build_into, strong=args.preset == "strong", device=args.device)
        return
    work = Path(tempfile.mkdtemp(prefix="freeret-preset-cost-"))
    atexit.register(shutil.rmtree, work, True)  # a real-size model: 4-16 GB that would stay in /tmp
    started = time.perf_counter()
    directory = args.model_dir or work / "model"
    if not (directory / "config.json").is_file():
        # Built in a child process: its memory must not count in this one's peak RSS.
        subprocess.run([sys.executable, __file__, "--preset", args.preset, "--device", args.device,
                        "--build-into", str(directory)], check=True)
    build_s = time.perf_counter() - started
    photos = sorted(p for p in args.photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))[: args.photos]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version()}
    report = {"preset": args.preset, "machine": machine,
              "build_s": round(build_s, 1),
              **measure(str(directory), args.dtype, args.image_max_pixels, photos, work, args.device, args.batches,
                         args.prep_workers, args.load_only)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.load_only:
        if args.out:
            args.out.write_text(text + "\n")
        return
    if args.out:
        args.out.write_text(text + "\n")
    elif args.device.startswith("cuda"):
        (HERE / f"preset_cost_{args.preset}_gpu.json").write_text(text + "\n")
    else:
        (HERE / f"preset_cost_{args.preset}.json").write_text(text + "\n")
        plot(HERE / "preset_cost.png")


if __name__ == "__main__":
    main()
