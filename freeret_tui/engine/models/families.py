"""Per-family facts, only where architectures really differ: which module's input is the pre-MLP residual.

Most decoder layers (Llama, Qwen2/2.5/3, Mistral, Phi-3, SmolLM, the text side of Idefics3/SmolVLM, LLaVA)
normalise the residual with ``post_attention_layernorm`` right before the MLP, so that norm's *input* is the
residual stream after attention. Gemma 2/3 apply ``post_attention_layernorm`` to the attention output before
the residual add; their pre-MLP residual enters ``pre_feedforward_layernorm``. OLMo 2 norms after each block,
so the MLP itself receives the residual.
"""

from __future__ import annotations

DEFAULT_PRE_MLP_MODULE = "post_attention_layernorm"

PRE_MLP_MODULE: dict[str, str] = {
    "gemma2": "pre_feedforward_layernorm",
    "gemma3": "pre_feedforward_layernorm",
    "gemma3_text": "pre_feedforward_layernorm",
    "olmo2": "mlp",
}


def pre_mlp_module_name(model_type: str) -> str:
    """Name of the child of a decoder layer whose forward input is the residual stream before the MLP."""
    return PRE_MLP_MODULE.get(model_type, DEFAULT_PRE_MLP_MODULE)
