"""LLaVA with a query-based adapter: a perceiver resampler (Flamingo) or a Q-Former-lite (BLIP-2).

Both replace LLaVA's per-patch MLP with `num_queries` learned queries that cross-attend to the
vision tokens (the Q-Former-lite also lets the queries self-attend first), so the LLM reads a
fixed number of image tokens whatever the encoder's patch count. Everything else is
transformers' LLaVA: the saved folder is a LLaVA folder whose `model_type` is "mmagent_llava",
registered with the Auto classes by `register_architectures()` (the vlm plugin calls it before
loading any model). It lives in core, beside the trainer that builds it, so that the trainer and the
plugins both import it from here (core never imports a plugin). The processor's `patch_size` is set so a prompt holds one `<image>` token
per query.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, LlavaConfig, LlavaForConditionalGeneration

QUERY_PROJECTORS = ("resampler", "qformer")


class QueryAdapterConfig(LlavaConfig):
    model_type = "mmagent_llava"

    def __init__(self, projector_type: str = "resampler", num_queries: int = 4, projector_layers: int = 2,
                 projector_heads: int = 4, **kwargs):
        if projector_type not in QUERY_PROJECTORS:
            raise ValueError(f"projector_type must be one of {QUERY_PROJECTORS}, not {projector_type!r}")
        self.projector_type = projector_type
        self.num_queries = num_queries
        self.projector_layers = projector_layers
        self.projector_heads = projector_heads
        super().__init__(**kwargs)


class QueryBlock(nn.Module):
    """(optional self-attention) → cross-attention to the vision tokens → MLP, pre-norm residuals."""

    def __init__(self, width: int, heads: int, self_attend: bool):
        super().__init__()
        self.self_norm = nn.LayerNorm(width) if self_attend else None
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True) if self_attend else None
        self.query_norm, self.kv_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            q = self.self_norm(queries)
            queries = queries + self.self_attn(q, q, q, need_weights=False)[0]
        kv = self.kv_norm(tokens)
        queries = queries + self.cross_attn(self.query_norm(queries), kv, kv, need_weights=False)[0]
        return queries + self.mlp(self.mlp_norm(queries))


class QueryAdapter(nn.Module):
    """Vision tokens (B, N, vision width) → (B, num_queries, LLM width)."""

    def __init__(self, config: QueryAdapterConfig):
        super().__init__()
        width = config.vision_config.hidden_size
        self.queries = nn.Parameter(torch.randn(config.num_queries, width) * 0.02)
        self.blocks = nn.ModuleList(QueryBlock(width, config.projector_heads, config.projector_type == "qformer")
                                    for _ in range(config.projector_layers))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        queries = self.queries.unsqueeze(0).expand(image_features.shape[0], -1, -1).to(image_features.dtype)
        for block in self.blocks:
            queries = block(queries, image_features)
        return self.out(self.out_norm(queries))


class QueryAdapterLlava(LlavaForConditionalGeneration):
    config_class = QueryAdapterConfig

    def __init__(self, config: QueryAdapterConfig):
        super().__init__(config)
        self.model.multi_modal_projector = QueryAdapter(config)
        self.post_init()


def register_architectures() -> None:
    """Make "mmagent_llava" folders loadable by AutoConfig / AutoModelForImageTextToText (idempotent)."""
    try:
        AutoConfig.register(QueryAdapterConfig.model_type, QueryAdapterConfig)
    except ValueError:  # already registered
        pass
    try:
        AutoModelForImageTextToText.register(QueryAdapterConfig, QueryAdapterLlava)
    except ValueError:
        pass
