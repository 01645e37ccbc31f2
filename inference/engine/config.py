"""Configuration: the model's hyperparameters, as read from a checkpoint's config.json, and sizes."""

from __future__ import annotations

from dataclasses import dataclass

import sizes

from .errors import EngineError

def parse_size(text: str) -> int:
    """'1.5GiB' -> 1610612736, in the units of the repository's sizes module."""
    try:
        return sizes.parse_size(text)
    except ValueError as error:
        raise EngineError(str(error)) from None


def format_size(n: int | float) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= factor:
            return f"{n / factor:.2f}{unit}"
    return f"{int(n)}B"


@dataclass(frozen=True)
class ModelConfig:
    """What the engine needs from config.json; one set of fields serves every decoder-only architecture."""

    model_type: str
    vocab_size: int
    hidden_size: int
    n_layer: int
    n_head: int
    layer_norm_epsilon: float
    context_length: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    apply_residual_connection_post_layernorm: bool = False
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_head

    @classmethod
    def from_json(cls, raw: dict) -> "ModelConfig":
        def first(*names, default=None):
            for name in names:
                if raw.get(name) is not None:
                    return raw[name]
            return default

        eos = first("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        hidden = int(first("hidden_size", "n_embed"))
        n_head = int(first("n_head", "num_attention_heads"))
        if hidden % n_head:
            raise EngineError(f"config.json is inconsistent: hidden_size {hidden} is not a multiple of n_head {n_head}")
        return cls(
            model_type=str(raw.get("model_type", "")),
            vocab_size=int(first("vocab_size")),
            hidden_size=hidden,
            n_layer=int(first("n_layer", "num_hidden_layers")),
            n_head=n_head,
            layer_norm_epsilon=float(first("layer_norm_epsilon", default=1e-5)),
            # BLOOM was trained on 2048-token sequences; its config.json names that seq_length when it names it.
            context_length=int(first("seq_length", "n_positions", "max_position_embeddings", default=2048)),
            bos_token_id=first("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=first("pad_token_id"),
            apply_residual_connection_post_layernorm=bool(raw.get("apply_residual_connection_post_layernorm", False)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
        )
