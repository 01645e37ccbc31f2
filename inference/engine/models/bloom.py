"""BLOOM: ALiBi attention, LayerNorm (also right after the embeddings), GELU MLP, tied embeddings.

Mirrors transformers' BloomForCausalLM numerically (same ALiBi positions from the padding mask, same
additive mask of the dtype's minimum, softmax in fp32), so logits agree within 1e-4 in fp32; the code
is shaped for a preallocated KV cache and weights that may live in a reusable read buffer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels import linear  # dense, or fused on quantized weights

MODEL_TYPE = "bloom"
QUANTIZED = ("qkv_w", "proj_w", "fc1_w", "fc2_w")  # the block roles quantize.py compresses: the matmul weights
HEAD_CHUNK_BYTES = 32 * 2**20  # embedding rows converted at once when the head computes in another dtype

_BLOCK = {
    "ln1_w": "input_layernorm.weight", "ln1_b": "input_layernorm.bias",
    "qkv_w": "self_attention.query_key_value.weight", "qkv_b": "self_attention.query_key_value.bias",
    "proj_w": "self_attention.dense.weight", "proj_b": "self_attention.dense.bias",
    "ln2_w": "post_attention_layernorm.weight", "ln2_b": "post_attention_layernorm.bias",
    "fc1_w": "mlp.dense_h_to_4h.weight", "fc1_b": "mlp.dense_h_to_4h.bias",
    "fc2_w": "mlp.dense_4h_to_h.weight", "fc2_b": "mlp.dense_4h_to_h.bias",
}


def weight_names(cfg, tensors) -> tuple[dict[str, str], list[dict[str, str]]]:
    # transformers saves BloomForCausalLM under "transformer."; the original BigScience files saved
    # BloomModel without a prefix. Both load.
    prefix = "transformer." if "transformer.word_embeddings.weight" in tensors else ""
    names = {
        "wte": f"{prefix}word_embeddings.weight",
        "emb_ln_w": f"{prefix}word_embeddings_layernorm.weight", "emb_ln_b": f"{prefix}word_embeddings_layernorm.bias",
        "ln_f_w": f"{prefix}ln_f.weight", "ln_f_b": f"{prefix}ln_f.bias",
    }
    if not cfg.tie_word_embeddings:
        names["lm_head"] = "lm_head.weight"
    blocks = [{role: f"{prefix}h.{i}.{suffix}" for role, suffix in _BLOCK.items()} for i in range(cfg.n_layer)]
    return names, blocks


def weight_shapes(cfg) -> tuple[dict[str, tuple], dict[str, tuple]]:
    V, C = cfg.vocab_size, cfg.hidden_size
    glob = {"wte": (V, C), "emb_ln_w": (C,), "emb_ln_b": (C,), "ln_f_w": (C,), "ln_f_b": (C,), "lm_head": (V, C)}
    block = {"ln1_w": (C,), "ln1_b": (C,), "qkv_w": (3 * C, C), "qkv_b": (3 * C,), "proj_w": (C, C), "proj_b": (C,),
             "ln2_w": (C,), "ln2_b": (C,), "fc1_w": (4 * C, C), "fc1_b": (4 * C,), "fc2_w": (C, 4 * C), "fc2_b": (C,)}
    return glob, block


def alibi_slopes(n_head: int, device) -> torch.Tensor:
    """The geometric ALiBi slopes, with BLOOM's interleaved extension for head counts that are not powers of 2."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32, device=device)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32, device=device))
    if closest != n_head:
        extra_base = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32, device=device)
        n_extra = min(closest, n_head - closest)
        slopes = torch.cat([slopes, torch.pow(extra_base, torch.arange(1, 1 + 2 * n_extra, 2, dtype=torch.int32, device=device))])
    return slopes


def attention_keys(L: int, T: int, capacity: int) -> int:
    """How many key slots a step of T queries ending at slot L attends over, in a cache of `capacity`
    slots: a decode step takes the whole cache, whose products read it where it lies, unless it is more
    than 3x the slots in use (over a slice each slot costs about 3.5x: the slice is copied first)."""
    return capacity if T == 1 and capacity <= 3 * L else L


def attention_bias(slopes: torch.Tensor, valid: torch.Tensor, T: int, dtype,
                   keys: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ALiBi bias and additive mask for the last T query slots of L = valid.shape[1], shared by every block,
    over `keys` key slots (default L; more lets a decode step multiply a whole preallocated cache where it
    lies, its slots past L masked).

    valid: [B, L] bool, False at left padding. A key's ALiBi position counts only the valid keys before it,
    so a padded prompt sees exactly the biases it would see alone; padding and future keys get the dtype's
    minimum added (not -inf), so a fully masked padding row stays finite, as in transformers.
    """
    B, L = valid.shape
    if keys is not None and keys > L:
        valid = torch.cat([valid, valid.new_zeros(B, keys - L)], 1)
    K = valid.shape[1]
    positions = ((valid.cumsum(-1) - 1) * valid)[:, None, :]  # [B, 1, K]
    alibi = (slopes[None, :, None] * positions).reshape(B * slopes.shape[0], 1, K).to(dtype)  # [B*nh, 1, K]
    q_slot = torch.arange(L - T, L, device=valid.device)[:, None]  # [T, 1]
    k_slot = torch.arange(K, device=valid.device)[None, :]  # [1, K]
    blocked = (k_slot > q_slot)[None, :, :] | ~valid[:, None, :]  # [B, T, K]
    mask = torch.zeros(B, 1, T, K, dtype=dtype, device=valid.device)
    mask.masked_fill_(blocked[:, None], torch.finfo(dtype).min)
    return alibi, mask


def embed(g: dict, ids: torch.Tensor, eps: float) -> torch.Tensor:
    # ids: [B, T] -> x: [B, T, C], in the norms' dtype, which is the compute dtype
    x = F.embedding(ids, g["wte"]).to(g["emb_ln_w"].dtype)
    return F.layer_norm(x, (x.shape[-1],), g["emb_ln_w"], g["emb_ln_b"], eps)


def block(w: dict, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int,
          alibi: torch.Tensor, mask: torch.Tensor, cfg) -> torch.Tensor:
    """One transformer block; writes this step's keys and values into the cache at [start, start+T).

    x: [B, T, C]; k_cache, v_cache: [B, nh, Lmax, hd], each row's [Lmax, hd] contiguous. The keys are held
    transposed, k_cache's rows read as [hd, Lmax], so that attending over the whole cache multiplies the
    keys and values where they lie (over a slice, the matmul first copies it: at batch 16 that copy took
    3.7 ms a block against 0.7 for the products themselves). alibi: [B*nh, 1, K]; mask: [B, 1, T, K]: the
    attention runs over the first K >= L = start+T slots; slots past L are masked and must hold finite
    values (zeros), since their probabilities of exactly 0 multiply them.
    """
    B, T, C = x.shape
    nh, hd, eps = cfg.n_head, cfg.head_dim, cfg.layer_norm_epsilon
    L, K = start + T, alibi.shape[-1]
    k_t = k_cache.view(B, nh, hd, k_cache.shape[2])  # [B, nh, hd, Lmax]
    h = F.layer_norm(x, (C,), w["ln1_w"], w["ln1_b"], eps)
    residual = h if cfg.apply_residual_connection_post_layernorm else x
    qkv = linear(h, w["qkv_w"], w["qkv_b"]).view(B, T, nh, 3, hd)  # heads interleave q, k, v per head
    k_t[..., start:L] = qkv[..., 1, :].permute(0, 2, 3, 1)
    v_cache[:, :, start:L] = qkv[..., 2, :].transpose(1, 2)
    q = qkv[..., 0, :].transpose(1, 2).reshape(B * nh, T, hd)  # [B*nh, T, hd]
    k = k_t[..., :K].reshape(B * nh, hd, K)  # views: the cache's batch and head dims merge
    v = v_cache[:, :, :K].reshape(B * nh, K, hd)
    scores = torch.baddbmm(alibi, q, k, beta=1.0, alpha=1.0 / math.sqrt(hd))  # [B*nh, T, K]
    scores = scores.view(B, nh, T, K) + mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(x.dtype).view(B * nh, T, K)
    attn = torch.bmm(probs, v).view(B, nh, T, hd).permute(0, 2, 1, 3).reshape(B, T, C)
    x = linear(attn, w["proj_w"], w["proj_b"]) + residual
    h = F.layer_norm(x, (C,), w["ln2_w"], w["ln2_b"], eps)
    residual = h if cfg.apply_residual_connection_post_layernorm else x
    h = _gelu(linear(h, w["fc1_w"], w["fc1_b"]))
    return linear(h, w["fc2_w"], w["fc2_b"]) + residual


def _gelu(x: torch.Tensor) -> torch.Tensor:
    """BLOOM's tanh GELU, op for op as transformers computes it: in bf16 each op rounds, and a fused
    F.gelu(approximate="tanh"), rounding once, moves the logits by several bf16 steps."""
    # x * 0.5 * (1.0 + tanh(0.79788456 * x * (1 + 0.044715 * x * x))), in place where the order allows
    inner = (x * 0.044715).mul_(x).add_(1)
    t = (x * 0.79788456).mul_(inner).tanh_().add_(1.0)
    return (x * 0.5).mul_(t)


def head(g: dict, x: torch.Tensor, eps: float) -> torch.Tensor:
    # x: [B, T, C] -> logits: [B, T, V] in fp32
    x = F.layer_norm(x, (x.shape[-1],), g["ln_f_w"], g["ln_f_b"], eps)
    w = g.get("lm_head", g["wte"])  # [V, C]
    if w.dtype == x.dtype:
        return F.linear(x, w).float()
    # Stored in another dtype than the compute's (bf16 weights, fp32 compute on a CPU without native bf16):
    # converted a chunk of vocabulary rows at a time, so the whole matrix is never copied.
    rows = max(1, HEAD_CHUNK_BYTES // (w.shape[1] * x.element_size()))
    chunk = torch.empty(min(rows, w.shape[0]), w.shape[1], dtype=x.dtype, device=x.device)
    out = torch.empty(*x.shape[:-1], w.shape[0], dtype=torch.float32, device=x.device)
    for a in range(0, w.shape[0], rows):
        n = min(rows, w.shape[0] - a)
        out[..., a:a + n] = F.linear(x, chunk[:n].copy_(w[a:a + n]))
    return out
