"""Builds tiny random multimodal models of real architectures, offline, for the test suite.

Each builder trains a small byte-level BPE tokenizer on the spot, wires it into the architecture's real
processor and config classes, and saves everything with ``save_pretrained`` so the product loads it back
through exactly the ``from_pretrained`` path a user's downloaded model takes.
"""

from __future__ import annotations

from pathlib import Path

# Shared by both architectures: ChatML-style turns; list contents may hold {"type": "image"} parts, rendered as
# each processor's image placeholder.
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}IMAGE_PLACEHOLDER{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_TRAINING_TEXT = [
    "You are required to assess if the text query is related to the image. Capture the semantics of the image.",
    "Task: Determine whether the candidate matches the query. Query: Candidate: A. Yes B. No Answer:",
    "a photo of a cat on a sofa, a rocket launch, coffee cup, coins, horse, astronaut, galaxies",
    "Do not use function words, prepositions, or symbols. In one word, output one word:",
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. 0123456789 [1] [2]",
]


# A SigLIP-style vision tower (Idefics3 and Gemma3 both use one): 32-pixel tiles of 8-pixel patches.
_SIGLIP_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def _tokenizer(special: list[str], chat_template: str, named: dict[str, str] | None = None):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=base + special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_TRAINING_TEXT * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
        additional_special_tokens=special,
        chat_template=chat_template,
        model_specific_special_tokens=named or {},
    )


def _text_config(vocab: int, hidden: int = 64) -> dict:
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    }


def build_idefics3(out: Path) -> Path:
    """Idefics3 (the SmolVLM family) with a 2-layer Llama text model and image splitting on."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    special += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _tokenizer(special, _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>"))
    config = Idefics3Config(
        vision_config=dict(_SIGLIP_VISION),
        text_config={"model_type": "llama", **_text_config(len(tok))},
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    # (32 / 8)^2 patches merged by scale_factor^2 = 4 image tokens per tile.
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4)
    processor.chat_template = tok.chat_template
    processor.save_pretrained(out)
    return out


def build_llava(out: Path) -> Path:
    """LLaVA: a CLIP vision tower, a projector and a Llama text model; image features replace <image> tokens."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _tokenizer(["<image>"], _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<image>"))
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", **_SIGLIP_VISION, "projection_dim": 32},
        text_config={"model_type": "llama", **_text_config(len(tok))},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,  # (32 / 8)^2 patches; the CLS token is dropped ("default" strategy)
        vision_feature_layer=-1,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=tok.chat_template,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(out)
    return out


def build_gemma3(out: Path) -> Path:
    """Gemma3 (SigLIP vision + a text model whose layers norm both sides of attention and MLP).

    Gemma's ``post_attention_layernorm`` normalises the attention *output*, so the residual stream before the
    MLP is the input of ``pre_feedforward_layernorm`` instead: this model is what tests that family table row.
    """
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    special = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    named = {"boi_token": special[0], "eoi_token": special[1], "image_token": special[2]}
    tok = _tokenizer(special, _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", "<start_of_image>"), named)
    ids = tok.convert_tokens_to_ids(special)
    config = Gemma3Config(
        text_config={**_text_config(len(tok)), "head_dim": 16, "sliding_window": 1024, "model_type": "gemma3_text"},
        vision_config=dict(_SIGLIP_VISION),
        mm_tokens_per_image=4,
        boi_token_index=ids[0],
        eoi_token_index=ids[1],
        image_token_index=ids[2],
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    # Gemma3 initialises its image projection to zeros (fine before training, fatal for a random test model:
    # every image would embed alike).
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    model.save_pretrained(out)
    image_processor = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=tok.chat_template, image_seq_length=4
    )
    processor.save_pretrained(out)
    return out


# Qwen-VL's chat template in miniature: a default system turn, and each image as <|vision_start|><|image_pad|>
# <|vision_end|>, which the processor expands to one <|image_pad|> per merged patch.
_QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_QWEN_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _save_qwen(out: Path, model_class: type, config_class: type, text: dict, vision: dict, patch: int) -> Path:
    """Save a tiny Qwen-VL model the way a hub snapshot lays it out: weights, config, tokenizer files,
    preprocessor_config.json and chat_template.json (no video processor: the product never reads one)."""
    import json

    import torch
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _tokenizer(_QWEN_SPECIAL, _QWEN_CHAT_TEMPLATE)
    ids = dict(zip(("vision_start", "vision_end", "image", "video"), tok.convert_tokens_to_ids(_QWEN_SPECIAL)))
    text = {**_text_config(len(tok)), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, **text}
    config = config_class(
        text_config=text,
        vision_config={"depth": 1, "num_heads": 2, "patch_size": patch, "spatial_merge_size": 2,
                       "temporal_patch_size": 2, **vision},
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tok.save_pretrained(out)
    # A small dynamic-resolution budget: 2x2 to 8x8 merged patches, so the sample photos differ in token count.
    merged = 2 * patch
    Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, min_pixels=(2 * merged) ** 2,
                             max_pixels=(8 * merged) ** 2).save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": _QWEN_CHAT_TEMPLATE}))
    return out


def build_qwen2_vl(out: Path) -> Path:
    """Qwen2-VL (the default preset's family): ViT with 2D rotary patches, M-RoPE text model (sections of the
    head's rotary half for time, height and width)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    vision = {"embed_dim": 32, "hidden_size": 64}
    return _save_qwen(out, Qwen2VLForConditionalGeneration, Qwen2VLConfig, text, vision, patch=14)


def build_qwen2_5_vl(out: Path) -> Path:
    """Qwen2.5-VL (the strong preset's family): windowed attention in the vision tower, SwiGLU, M-RoPE."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {"rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
    vision = {"hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "window_size": 56,
              "fullatt_block_indexes": [0]}
    return _save_qwen(out, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, text, vision, patch=14)


def build_qwen3_vl(out: Path) -> Path:
    """Qwen3-VL: 16-pixel patches, learned position embeddings interpolated per image, deepstack features added
    to the first text layers, interleaved M-RoPE."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text = {"head_dim": 16, "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3],
                                             "mrope_interleaved": True}}
    vision = {"hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "num_position_embeddings": 64,
              "deepstack_visual_indexes": [0]}
    return _save_qwen(out, Qwen3VLForConditionalGeneration, Qwen3VLConfig, text, vision, patch=16)


def build_qwen3_5(out: Path) -> Path:
    """Qwen3.5: natively multimodal, its text layers alternate gated-delta-net linear attention with full attention
    (pure-PyTorch kernels on a CPU); Qwen3-VL's vision tower and processor."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = {"head_dim": 16, "layer_types": ["linear_attention", "full_attention"], "linear_key_head_dim": 16,
            "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
            "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                             "partial_rotary_factor": 1.0}}
    vision = {"hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "num_position_embeddings": 64}
    return _save_qwen(out, Qwen3_5ForConditionalGeneration, Qwen3_5Config, text, vision, patch=16)
