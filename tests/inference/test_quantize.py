"""Compressed weights (int8, int4) and the compute dtype: the arithmetic's error bounds, the checkpoint the
quantize command writes, the engine on it against transformers run on the same dequantized weights, the
bytes it streams, and every refusal of the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from inference.engine import CheckpointError, Engine, EngineError, generate, kernels
from inference.engine.batching import ContinuousBatch, SequenceRequest
from inference.engine.checkpoint import Checkpoint
from inference.engine.cli import main
from inference.engine.quantize import dequantize, quantize_checkpoint, quantize_int4, quantize_int8

PROMPTS = ["All human beings are born free", "Watu wote", "人人生而自由，在尊严和权利上一律平等。 Tous les"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_bf16(tmp_path_factory, tiny_checkpoint):
    """A small random bf16 BLOOM whose dims divide into int4 groups of 64, with weights large enough
    (std 0.3) that its greedy tokens vary with the context."""
    from transformers import BloomConfig, BloomForCausalLM

    out = tmp_path_factory.mktemp("small") / "small-bf16"
    config = BloomConfig(vocab_size=json.loads((tiny_checkpoint / "config.json").read_text())["vocab_size"],
                         hidden_size=128, n_layer=4, n_head=4, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                         seq_length=2048, initializer_range=0.3)
    torch.manual_seed(2)
    BloomForCausalLM._from_config(config, dtype=torch.bfloat16).save_pretrained(out, max_shard_size="200KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, out / name)
    return out


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_checkpoint, small_bf16):
    """name -> quantized checkpoint directory, each written once for the module."""
    root = tmp_path_factory.mktemp("quantized")
    specs = {"tiny-int8": (tiny_checkpoint, 8, 64), "tiny-int4": (tiny_checkpoint, 4, 32),
             "small-int8": (small_bf16, 8, 64), "small-int4": (small_bf16, 4, 64)}
    return {name: quantize_checkpoint(src, root / name, bits=bits, group_size=g, max_shard_size="150KB").out
            for name, (src, bits, g) in specs.items()}


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for shard in sorted(path.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def reference_model(path: Path, dtype: torch.dtype):
    """transformers' BloomForCausalLM in dtype on the checkpoint's weights, dequantized with the same
    function the engine uses (the exact parity for a quantized model), everything else converted."""
    from transformers import BloomConfig, BloomForCausalLM

    ckpt = Checkpoint.open(path)
    tensors, q = state_dict(path), ckpt.quantization
    weights, aux = {}, set()
    for names in ckpt.block_names if q else []:
        for role in ckpt.arch.QUANTIZED:
            scale, zero = names[f"{role}_scale"], names.get(f"{role}_zero")
            aux |= {scale, zero}
            weights[names[role]] = dequantize(tensors[names[role]], tensors[scale], tensors.get(zero),
                                              group_size=q.group_size, dtype=dtype)
    weights.update({n: t.to(dtype) for n, t in tensors.items() if n not in weights and n not in aux})
    raw = json.loads((path / "config.json").read_text())
    raw.pop("quantization_config", None)
    model = BloomForCausalLM(BloomConfig.from_dict(raw)).to(dtype).eval()
    result = model.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}  # tied to the embeddings
    return model


def left_pad(engine, prompts):
    ids = [engine.encode(p) for p in prompts]
    T = max(map(len, ids))
    input_ids = torch.full((len(ids), T), 3)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for b, seq in enumerate(ids):
        input_ids[b, T - len(seq):] = torch.tensor(seq)
        mask[b, T - len(seq):] = 1
    return input_ids, mask


def streaming_budget(path, **kw) -> int:
    """The smallest budget that holds the engine's fixed part and buffers: every block streams."""
    with Engine(path, memory_budget="4GiB", **kw) as probe:
        p, whole = probe.placement, probe.converted_at_load
    if whole:  # held in the compute dtype from the load on; just short of that, blocks convert one at a time
        with Engine(path, memory_budget=p.fixed_bytes + p.kv_cache_bytes + sum(p.block_bytes) - 1, **kw) as probe:
            p = probe.placement
            assert not probe.converted_at_load
    return p.fixed_bytes + p.kv_cache_bytes + p.scratch_bytes + 2 * max(p.block_bytes)


# -- arithmetic --------------------------------------------------------------------------------------

def weights_to_test(tiny_checkpoint, small_bf16):
    torch.manual_seed(0)
    w = torch.randn(96, 256) * 0.05
    w[3] = 0  # an all-zero row / group
    w[5, :64] = 0.7  # a constant group
    w[7, 10] = 4.0  # an outlier
    tiny, small = state_dict(tiny_checkpoint), state_dict(small_bf16)
    return [w, tiny["transformer.h.0.mlp.dense_h_to_4h.weight"], small["transformer.h.1.self_attention.query_key_value.weight"],
            small["transformer.h.2.mlp.dense_4h_to_h.weight"]]


def test_it_dequantizes_int8_within_half_a_scale_per_element(tiny_checkpoint, small_bf16):
    for w in weights_to_test(tiny_checkpoint, small_bf16):
        q, scale = quantize_int8(w)
        assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.abs().max() <= 127
        w32 = w.float()
        assert torch.equal(scale[w32.abs().amax(1) > 0], (w32.abs().amax(1) / 127)[w32.abs().amax(1) > 0])
        err = (dequantize(q, scale) - w32).abs()
        bound = scale[:, None] / 2
        assert (err <= bound * (1 + 1e-5)).all()
        assert (err / bound).max() > 0.9  # the bound is tight: rounding to nearest does reach it
        assert torch.equal(dequantize(q, scale, dtype=torch.bfloat16), dequantize(q, scale).bfloat16())  # rounded once


def test_it_dequantizes_int4_within_half_a_scale_per_group(tiny_checkpoint, small_bf16):
    for w in weights_to_test(tiny_checkpoint, small_bf16):
        group = 64 if w.shape[1] % 64 == 0 else 32
        packed, scale, zero = quantize_int4(w, group)
        n_out, n_in = w.shape
        assert packed.shape == (n_out, n_in // 2) and scale.shape == zero.shape == (n_out, n_in // group)
        assert scale.dtype == torch.bfloat16 and zero.max() <= 15
        # codes j and j + group/2 of a group share byte j, low nibble first
        p = packed.view(n_out, n_in // group, group // 2)
        codes = torch.cat([p & 15, p >> 4], -1).float()
        g = w.float().view(n_out, n_in // group, group)
        assert torch.equal((codes - zero[..., None].float()) * scale[..., None].float(),
                           dequantize(packed, scale, zero, group_size=group).view_as(g))
        span = g.amax(-1).clamp(min=0) - g.amin(-1).clamp(max=0)
        assert (scale.float() * 15 >= span).all()  # the stored scale was rounded up: no clipping
        err = (dequantize(packed, scale, zero, group_size=group).view_as(g) - g).abs()
        bound = scale.float()[..., None] / 2
        assert (err <= bound * (1 + 1e-5)).all()
        assert (err / bound).max() > 0.9
        assert (dequantize(packed, scale, zero, group_size=group).view_as(g)[g == 0] == 0).all()  # zeros stay exact


# -- the checkpoint ----------------------------------------------------------------------------------

def test_it_writes_a_sharded_checkpoint_with_a_manifest_and_each_block_in_one_span(tiny_checkpoint, quantized, monkeypatch, tmp_path):
    from inference.engine import quantize

    monkeypatch.setattr(quantize, "SLICE_BYTES", 5000)  # several slices of rows per weight
    out = quantize_checkpoint(tiny_checkpoint, tmp_path / "int4", bits=4, group_size=32, max_shard_size="150KB").out
    assert state_dict(out).keys() == state_dict(quantized["tiny-int4"]).keys()
    assert all(torch.equal(a, b) for a, b in zip(state_dict(out).values(), state_dict(quantized["tiny-int4"]).values()))

    config = json.loads((out / "config.json").read_text())
    qc = config["quantization_config"]
    assert (qc["method"], qc["bits"], qc["group_size"], qc["scale_dtype"]) == ("portal-int4", 4, 32, "BF16")
    assert qc["modules"] == ["self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"]
    assert (out / "tokenizer.json").read_bytes() == (tiny_checkpoint / "tokenizer.json").read_bytes()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == {s.name for s in shards}

    source, ours = state_dict(tiny_checkpoint), state_dict(out)
    ckpt = Checkpoint.open(out)
    for names in ckpt.block_names:
        entries = ckpt.entries(names)
        assert len({e.path for e in entries.values()}) == 1  # a block never straddles shards
        spans = sorted((e.offset, e.offset + e.nbytes) for e in entries.values())
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # and its tensors are adjacent
        for role, name in names.items():
            if role in ckpt.arch.QUANTIZED:
                packed, scale, zero = quantize_int4(source[name], 32)
                assert torch.equal(ours[name], packed) and torch.equal(ours[names[f"{role}_scale"]], scale)
            elif not role.endswith(("_scale", "_zero")):
                assert torch.equal(ours[name], source[name])  # biases and norms unchanged
    for name in ckpt.global_names.values():
        assert torch.equal(ours[name], source[name])
    with safe_open(shards[0], "pt") as f:
        assert f.metadata()["quantization"] == "portal-int4"


def test_it_fails_loudly_in_transformers(quantized):
    from transformers import AutoModelForCausalLM

    for name in ("tiny-int8", "tiny-int4"):
        with pytest.raises(ValueError, match="quantization config"):
            AutoModelForCausalLM.from_pretrained(quantized[name])


# -- the engine on quantized checkpoints -------------------------------------------------------------

CASES = [("tiny-int8", torch.float32, 1e-4), ("tiny-int4", torch.float32, 1e-4),
         ("small-int8", torch.bfloat16, 1e-6), ("small-int4", torch.bfloat16, 1e-6)]


@pytest.mark.parametrize("name, dtype, tol", CASES, ids=[c[0] for c in CASES])
def test_it_matches_transformers_on_the_dequantized_weights_resident_and_streamed(quantized, name, dtype, tol):
    path = quantized[name]
    reference = reference_model(path, dtype)
    compute = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    # dequantizing every block, bit for bit what transformers computes on the dequantized weights
    kw = dict(max_batch_size=4, max_seq_len=64, compute_dtype=compute, fused_kernels=False)
    for budget in ("1GiB", streaming_budget(path, **kw)):
        with Engine(path, memory_budget=budget, **kw) as engine:
            assert engine.dtype == dtype
            assert bool(engine.placement.streamed) == (budget != "1GiB")
            input_ids, mask = left_pad(engine, PROMPTS)
            ours = engine.logits(input_ids, mask)
            with torch.no_grad():
                theirs = reference(input_ids=input_ids, attention_mask=mask).logits.float()
            real = mask.bool()
            assert (ours[real] - theirs[real]).abs().max().item() < tol
            result = engine.generate(PROMPTS, max_new_tokens=10, stop_tokens=[], return_logits=True)
            out = reference.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                     eos_token_id=None, pad_token_id=3, output_logits=True, return_dict_in_generate=True)
            assert [c.token_ids for c in result.completions] == out.sequences[:, input_ids.shape[1]:].tolist()
            assert (torch.stack(result.step_logits, 1) - torch.stack(out.logits, 1).float()).abs().max().item() < tol
            assert result.stats.compute_dtype == str(dtype).removeprefix("torch.")


# -- the fused kernels (CPU, bf16) -------------------------------------------------------------------

def test_it_packs_int4_codes_as_the_cpu_kernel_does_and_dequantizes_them_alike(small_bf16):
    w = state_dict(small_bf16)["transformer.h.1.mlp.dense_h_to_4h.weight"]  # [512, 128]
    q, scale, zero = quantize_int4(w, 64)
    codes = q.view(512, 2, 32)
    codes = torch.cat([codes & 15, codes >> 4], -1).view(512, 128).to(torch.int32)
    packed = kernels.pack_int4_for_cpu_(q.clone(), 64, torch.empty(kernels.work_bytes(128) // 4))
    assert torch.equal(packed, torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
    for dtype in (torch.float32, torch.bfloat16):
        ours = kernels.dequantize_cpu_int4_into(torch.empty(512, 128, dtype=dtype), packed, scale, zero, 64,
                                                torch.empty(kernels.work_bytes(128) // 4))
        assert torch.equal(ours, dequantize(q, scale, zero, group_size=64, dtype=dtype))


@pytest.mark.parametrize("bits", [8, 4])
def test_its_fused_matmul_is_the_dequantized_one_within_bf16_rounding(small_bf16, bits):
    w = state_dict(small_bf16)["transformer.h.2.self_attention.query_key_value.weight"].float()  # [384, 128]
    torch.manual_seed(0)
    x, bias = torch.randn(5, 3, 128).bfloat16(), torch.randn(384).bfloat16()
    if bits == 8:
        q, scale = quantize_int8(w)
        zero, group, dense = None, None, dequantize(q, scale)
    else:
        q, scale, zero = quantize_int4(w, 64)
        group, dense = 64, dequantize(q, scale, zero, group_size=64)
        kernels.pack_int4_for_cpu_(q, 64, torch.empty(kernels.work_bytes(128) // 4))
    exact = torch.nn.functional.linear(x.float(), dense, bias.float())
    ours = kernels.linear(x, kernels.FusedLinear(q, scale, zero, group, torch.bfloat16), bias)
    assert ours.shape == (5, 3, 384) and ours.dtype == torch.bfloat16
    # the dense bf16 path rounds each weight to bf16 first: the fused one is no further from the exact product
    dense_bf16 = torch.nn.functional.linear(x, dense.bfloat16(), bias).float()
    assert (ours.float() - exact).abs().max() <= 2 * (dense_bf16 - exact).abs().max() + 1e-3


def fused_calls(monkeypatch) -> list[int]:
    calls = []
    original = kernels.FusedLinear.__call__

    def counted(self, x, bias):
        calls.append(x.shape[0] * x.shape[1])
        return original(self, x, bias)

    monkeypatch.setattr(kernels.FusedLinear, "__call__", counted)
    return calls


@pytest.mark.parametrize("name", ["small-int8", "small-int4"])
def test_it_decodes_with_the_fused_kernels_resident_and_streamed(quantized, name, monkeypatch):
    """Decode steps multiply with the codes, prefills dequantize: the first token is the dequantizing
    path's exactly, the next steps' logits stay within bf16 noise of it."""
    path, calls = quantized[name], fused_calls(monkeypatch)
    kw = dict(max_batch_size=4, max_seq_len=64, compute_dtype="bf16")
    for budget in ("1GiB", streaming_budget(path, **kw)):
        out = {}
        for fused in (False, None):
            calls.clear()
            with Engine(path, memory_budget=budget, fused_kernels=fused, **kw) as engine:
                assert engine.weights.fused is (fused is None)
                assert bool(engine.placement.streamed) == (budget != "1GiB")
                out[fused] = engine.generate(PROMPTS, max_new_tokens=4, stop_tokens=[], return_logits=True)
                n_layer = engine.config.n_layer
            assert calls == ([3] * (3 * 4 * n_layer) if fused is None else [])  # 3 decode steps x 4 matmuls a block
        first, fused = out[False].step_logits, out[None].step_logits
        assert torch.equal(first[0], fused[0])
        assert [c.token_ids[0] for c in out[False].completions] == [c.token_ids[0] for c in out[None].completions]
        assert (first[1] - fused[1]).abs().max() <= 0.05 * first[1].abs().max()


def test_it_builds_resident_int4_blocks_kernel_tables_once_and_budgets_them(quantized, monkeypatch):
    """The int4 kernel's scale table (1/8 of the codes) is built at load for a resident block and counted
    in its budget; a streamed block's is rebuilt every pass, in the conversion scratch."""
    path, built = quantized["small-int4"], []
    original = kernels.FusedLinear.__init__

    def counted(self, *args):
        built.append(args[0].shape)
        original(self, *args)

    monkeypatch.setattr(kernels.FusedLinear, "__init__", counted)
    kw = dict(max_batch_size=4, max_seq_len=64, compute_dtype="bf16")
    with Engine(path, memory_budget="1GiB", **kw) as probe:
        block = max(probe.placement.block_bytes)
    half = streaming_budget(path, **kw) + 2 * block  # room for one block and its table, not two
    for budget in ("1GiB", half):
        built.clear()
        with Engine(path, memory_budget=budget, **kw) as engine:
            p, C = engine.placement, engine.config.hidden_size
            table = 12 * C * C // 64 * 2 * 2  # a value and an offset per group of 64, in bf16
            assert p.resident_extra_bytes == table
            assert p.planned_bytes == (p.fixed_bytes + p.kv_cache_bytes + p.n_buffers * p.buffer_bytes + p.scratch_bytes
                                       + sum(p.block_bytes[i] + table for i in p.resident))
            assert p.planned_bytes <= p.budget and len(built) == 4 * len(p.resident) and p.resident
            assert len(p.resident) == (1 if budget == half else 4)
            built.clear()
            engine.generate(PROMPTS, max_new_tokens=4, stop_tokens=[])
            assert len(built) == 4 * len(p.streamed) * 3  # 3 decode steps; the resident blocks' were kept
    with Engine(path, memory_budget="1GiB", fused_kernels=False, **kw) as engine:
        assert engine.placement.resident_extra_bytes == 0


def test_it_dequantizes_codes_the_kernels_cannot_load(quantized, tmp_path):
    """A checkpoint whose data section is not 64-byte aligned (written before the kernels were used, or
    by hand): its blocks dequantize, giving exactly the dequantizing path's tokens."""
    path, moved = quantized["small-int8"], tmp_path / "unaligned"
    shutil.copytree(path, moved)
    for shard in moved.glob("*.safetensors"):
        raw = shard.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        shard.write_bytes((n + 8).to_bytes(8, "little") + raw[8:8 + n] + b" " * 8 + raw[8 + n:])
    out = {}
    for p, fused in ((path, False), (moved, None)):
        with Engine(p, memory_budget="1GiB", max_batch_size=4, max_seq_len=64, compute_dtype="bf16", fused_kernels=fused) as engine:
            out[fused] = engine.generate(PROMPTS, max_new_tokens=6, stop_tokens=[], return_logits=True)
    assert [c.token_ids for c in out[None].completions] == [c.token_ids for c in out[False].completions]
    assert all(torch.equal(a, b) for a, b in zip(out[None].step_logits, out[False].step_logits))


def test_it_refuses_fused_kernels_where_they_do_not_run(quantized):
    with pytest.raises(EngineError, match="fused int8/int4 kernels run on a CPU computing in bf16"):
        Engine(quantized["small-int8"], memory_budget="1GiB", compute_dtype="fp32", fused_kernels=True)
    with pytest.raises(EngineError, match="groups of 32/64/128/256"):
        Engine(quantized["tiny-int4"], memory_budget="1GiB", compute_dtype="bf16", fused_kernels=True)


def test_it_streams_a_half_and_a_quarter_of_the_bf16_bytes(small_bf16, quantized):
    read, payload = {}, {}
    for name, path in (("bf16", small_bf16), ("int8", quantized["small-int8"]), ("int4", quantized["small-int4"])):
        kw = dict(max_seq_len=64, compute_dtype="bf16")
        with Engine(path, memory_budget=streaming_budget(path, **kw), **kw) as engine:
            assert not engine.placement.resident
            stats = engine.generate(["All human beings"], max_new_tokens=4, stop_tokens=[]).stats
            ckpt = engine.checkpoint
            payload[name] = sum(e.nbytes for names in ckpt.block_names for e in ckpt.entries(names).values())
            assert payload[name] <= stats.bytes_read_per_decode_step <= engine.placement.streamed_bytes
            read[name] = stats.bytes_read_per_decode_step
    # int8: 1 byte a weight + an fp32 scale per row; int4: half a byte + a bf16 scale and a zero point per 64
    assert 0.5 < payload["int8"] / payload["bf16"] < 0.53 and 0.5 < read["int8"] / read["bf16"] < 0.56
    assert 0.27 < payload["int4"] / payload["bf16"] < 0.29 and 0.25 < read["int4"] / read["bf16"] < 0.33


def test_it_dequantizes_once_per_block_for_a_continuous_batch(quantized):
    """A step of a continuous batch runs a prefill group and a decode group through each block: both
    use the block's dequantized weights, and each sequence gets the tokens it gets alone."""
    path = quantized["small-int4"]
    kw = dict(max_batch_size=4, max_seq_len=64, compute_dtype="bf16")
    with Engine(path, memory_budget=streaming_budget(path, **kw), **kw) as engine:
        prompts = [engine.encode(p) for p in PROMPTS]
        batch = ContinuousBatch(engine, max_slots=4)
        batch.admit([SequenceRequest(key="a", prompt_ids=prompts[0], max_new_tokens=6)])
        tokens = {"a": [], "b": []}
        for step in range(8):
            if step == 2:
                batch.admit([SequenceRequest(key="b", prompt_ids=prompts[2], max_new_tokens=4)])
            for e in batch.step():
                if e.token_id is not None:
                    tokens[e.key].append(e.token_id)
        alone = engine.generate([prompts[0], prompts[2]], max_new_tokens=6, stop_tokens=[])
        assert tokens["a"] == alone.completions[0].token_ids and tokens["b"] == alone.completions[1].token_ids[:4]


def test_it_budgets_the_compressed_blocks_and_one_block_of_dequantized_weights(small_bf16, quantized):
    with Engine(small_bf16, memory_budget="1GiB", compute_dtype="bf16") as plain, \
            Engine(quantized["small-int4"], memory_budget="1GiB", compute_dtype="bf16") as q4:
        assert plain.placement.scratch_bytes == 0
        C = plain.config.hidden_size
        weights = 12 * C * C * 2  # qkv, proj, fc1, fc2 in bf16
        assert weights <= q4.placement.scratch_bytes <= weights + 4 * 2**20  # + the fp32 slice dequantization works in
        assert sum(q4.placement.block_bytes) < 0.3 * sum(plain.placement.block_bytes)
        minimum = streaming_budget(quantized["small-int4"], compute_dtype="bf16")
    with pytest.raises(Exception, match="compute-dtype copy of one block's weights"):
        Engine(quantized["small-int4"], memory_budget=minimum - 4096, compute_dtype="bf16")


# -- the compute dtype -------------------------------------------------------------------------------

def test_it_computes_a_bf16_checkpoint_in_fp32_as_transformers_does_on_the_upcast_weights(small_bf16):
    from transformers import BloomForCausalLM

    reference = BloomForCausalLM.from_pretrained(small_bf16, dtype=torch.bfloat16).float().eval()
    reads = {}
    for compute in ("bf16", "fp32"):
        kw = dict(max_batch_size=3, max_seq_len=64, compute_dtype=compute)
        with Engine(small_bf16, memory_budget=streaming_budget(small_bf16, **kw), **kw) as engine:
            assert not engine.placement.resident
            result = engine.generate(PROMPTS, max_new_tokens=8, stop_tokens=[], return_logits=True)
            reads[compute] = (result.stats.bytes_read_per_decode_step, engine.placement.block_bytes)
            if compute == "fp32":
                assert engine.dtype == torch.float32 and engine.placement.kv_cache_bytes == 4 * 2 * 3 * 64 * 128 * 4
                input_ids, mask = left_pad(engine, PROMPTS)
                out = reference.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                                         eos_token_id=None, pad_token_id=3, output_logits=True, return_dict_in_generate=True)
                assert [c.token_ids for c in result.completions] == out.sequences[:, input_ids.shape[1]:].tolist()
                assert (torch.stack(result.step_logits, 1) - torch.stack(out.logits, 1)).abs().max().item() < 1e-4
    assert reads["bf16"] == reads["fp32"]  # the same bytes streamed, whatever the compute


def test_it_converts_a_model_that_fits_whole_in_the_compute_dtype_once_at_load(small_bf16, quantized):
    """The warm path on a CPU without native bf16: a budget that holds the model in fp32 holds it so,
    converted at load, as transformers does; just below it, blocks convert one at a time per pass (the
    bytes planned stay within the budget either way), and both give the same tokens and logits."""
    kw = dict(max_batch_size=3, max_seq_len=64, compute_dtype="fp32")
    with Engine(small_bf16, memory_budget="1GiB", **kw) as whole:
        assert whole.converted_at_load and whole.weights is None and not whole.placement.streamed
        assert {t.dtype for w in whole.blocks.values() for t in w.values()} == {torch.float32}
        assert {t.dtype for t in whole.globals.values()} == {torch.float32}  # the LM head too: nothing converts per pass
        p = whole.placement
        fp32_bytes = sum(t.numel() * 4 for w in whole.blocks.values() for t in w.values())
        assert sum(p.block_bytes) == fp32_bytes and p.fixed_bytes == sum(t.numel() * 4 for t in whole.globals.values())
        needed = p.fixed_bytes + p.kv_cache_bytes + sum(p.block_bytes)
        a = whole.generate(PROMPTS, max_new_tokens=8, stop_tokens=[], return_logits=True)
    # the stored copy being converted must fit beside it too (the embeddings here, the largest single load)
    with Engine(small_bf16, memory_budget=needed + p.fixed_bytes // 2, **kw) as per_pass:
        assert not per_pass.converted_at_load and per_pass.weights is not None
        assert per_pass.placement.planned_bytes <= needed + p.fixed_bytes // 2
        assert {t.dtype for w in per_pass.blocks.values() for t in w.values()} == {torch.bfloat16}
        b = per_pass.generate(PROMPTS, max_new_tokens=8, stop_tokens=[], return_logits=True)
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert (torch.stack(a.step_logits) - torch.stack(b.step_logits)).abs().max().item() < 1e-5
    with Engine(small_bf16, memory_budget="1GiB", max_batch_size=3, max_seq_len=64, compute_dtype="bf16") as same:
        assert not same.converted_at_load  # nothing to convert
    with Engine(quantized["small-int8"], memory_budget="1GiB", **kw) as q8:
        assert not q8.converted_at_load and q8.weights is not None  # a quantized checkpoint stays compressed


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_it_picks_the_compute_dtype_by_what_the_cpu_does_natively(monkeypatch, tiny_checkpoint, small_bf16, native, expected):
    info = {**generate.cpu_info(), "native_bf16": native}
    monkeypatch.setattr(generate, "cpu_info", lambda: info)
    with Engine(small_bf16, memory_budget="1GiB", device="cpu") as engine:
        assert engine.dtype == expected and engine.storage_dtype == torch.bfloat16
    with Engine(tiny_checkpoint, memory_budget="1GiB", device="cpu") as engine:
        assert engine.dtype == torch.float32  # auto never lowers an fp32 checkpoint's precision


def test_it_reports_the_cpu_model_and_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    info = generate.cpu_info()
    assert info["onednn_max_isa"] is None
    assert info["model"] and isinstance(info["flags"], list) and isinstance(info["native_bf16"], bool)
    assert info["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith(("flags", "Features")))
        assert info["native_bf16"] == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))


@pytest.mark.parametrize("variable, isa, bf16_allowed", [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False), ("ONEDNN_MAX_CPU_ISA", "avx512_core", False),
    ("DNNL_MAX_CPU_ISA", "AVX512_CORE_VNNI", False), ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
    ("ONEDNN_MAX_CPU_ISA", "ALL", True)])
def test_a_cap_on_onednn_instructions_counts_as_a_cpu_without_them(monkeypatch, small_bf16, variable, isa, bf16_allowed):
    """ONEDNN_MAX_CPU_ISA=AVX2 makes torch's bf16 matmuls emulated (bench/inference --emulate-avx2): the
    engine must then compute in fp32, as on an AVX2-only CPU, whatever /proc/cpuinfo says."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(variable, isa)
    info = generate.cpu_info()
    assert info["onednn_max_isa"] == isa.upper()
    flags_have_bf16 = bool(set(info["flags"]) & {"avx512_bf16", "amx_bf16", "bf16"})
    assert info["native_bf16"] == (flags_have_bf16 and bf16_allowed)
    with Engine(small_bf16, memory_budget="1GiB", device="cpu") as engine:
        assert engine.dtype == (torch.bfloat16 if info["native_bf16"] else torch.float32)
        assert engine.storage_dtype == torch.bfloat16


# -- the command -------------------------------------------------------------------------------------

def test_it_quantizes_and_generates_from_the_command_line(capsys, small_bf16, tmp_path):
    code, out, _ = run_cli(capsys, "quantize", "--checkpoint", small_bf16, "--bits", "8", "--out", tmp_path / "q8")
    assert code == 0 and "portal-int8" in out and "0.51" in out
    code, out, _ = run_cli(capsys, "generate", "--checkpoint", tmp_path / "q8", "--memory-budget", "1GiB", "--prompt", "Watu",
                           "--max-new-tokens", "3", "--compute-dtype", "fp32", "--json")
    figures = json.loads(out)["figures"]
    assert code == 0 and figures["compute_dtype"] == "float32"


@pytest.mark.parametrize("how, args, message", [
    ("already-quantized", ["--bits", "4"], "is already quantized (portal-int8); quantize the original"),
    ("not-empty", ["--bits", "8"], "is not empty; name a new or empty directory"),
    ("bits", ["--bits", "3"], "--bits must be 8 or 4, not 3"),
    ("group", ["--bits", "4"], "input dim 96 is not a multiple of the group size 64; give --group-size a divisor of 96"),
    ("odd-group", ["--bits", "4", "--group-size", "3"], "group size must be an even number"),
    ("missing", ["--bits", "8"], "does not exist"),
    ("no-bits", [], "the following arguments are required: --bits"),
])
def test_it_refuses_in_one_line(capsys, tmp_path, tiny_checkpoint, quantized, how, args, message):
    src = {"already-quantized": quantized["tiny-int8"], "missing": tmp_path / "nowhere"}.get(how, tiny_checkpoint)
    out = tmp_path / "out"
    if how == "not-empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    code, stdout, err = run_cli(capsys, "quantize", "--checkpoint", src, "--out", out, *args)
    assert code == 2 and stdout == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert how == "not-empty" or not out.exists()  # nothing written


def test_it_refuses_a_checkpoint_quantized_by_another_tool(tmp_path, tiny_checkpoint):
    bad = tmp_path / "gptq"
    shutil.copytree(tiny_checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="is quantized with gptq; the engine runs portal-int8, portal-int4"):
        Engine(bad, memory_budget="1GiB")


def test_it_refuses_quantized_tensors_of_the_wrong_dtype(tmp_path, quantized):
    bad = tmp_path / "bad"
    shutil.copytree(quantized["tiny-int8"], bad)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"].update(method="portal-int4", bits=4, group_size=32)
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"query_key_value.weight has shape \[288, 96\], config.json implies \[288, 48\]"):
        Engine(bad, memory_budget="1GiB")
