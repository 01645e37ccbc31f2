"""python -m inference.engine plan: model bytes per format, placement per tier, refusals, and the
prediction checked against the engine running on this machine."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from inference.engine.cli import main
from inference.engine.errors import BudgetError
from inference.engine.plan import (Compute, Figure, Machine, kv_cache_bytes, machine_figures, memory_terms,
                                   minimum_per_tier, named_shape, place, plan, shape_of_checkpoint, step_time)

GB = 10**9


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def bloom_params(C: int, n_layer: int, V: int = 250880) -> int:
    """Counted tensor by tensor as transformers' BloomModel holds them."""
    embeddings = V * C + 2 * C  # word_embeddings, word_embeddings_layernorm
    attention = (C * 3 * C + 3 * C) + (C * C + C)  # query_key_value, dense
    mlp = (C * 4 * C + 4 * C) + (4 * C * C + C)  # dense_h_to_4h, dense_4h_to_h
    norms = 2 * 2 * C  # input_layernorm, post_attention_layernorm
    return embeddings + n_layer * (attention + mlp + norms) + 2 * C  # ln_f


COMPUTE = Compute("gpu", ((1, 150e12),), "given", Figure(1e12, "given"), Figure(0.3e-3, "given"),
                  {"int8": Figure(1e-14, "given"), "int4": Figure(2e-14, "given")})


def given_machine(shape, *, gpu: float | None, host: float, dtype: str = "bfloat16") -> Machine:
    terms = memory_terms(shape, dtype, cuda=gpu is not None)
    return Machine(int(host), None if gpu is None else int(gpu), Figure(7e9, "given"), Figure(25e9, "given"), COMPUTE,
                   dtype, terms)


def test_it_counts_bloom_176b_as_352_gb_in_bf16():
    s = named_shape("bloom-176b", "bf16")
    assert s.params == bloom_params(14336, 70) == 176_247_271_424  # the published count
    assert s.total_bytes == 2 * s.params  # 352.5 GB
    assert s.n_layer == 70 and len(set(s.block_bytes)) == 1


def test_it_counts_the_compressed_formats_from_the_architecture():
    bf16, int8, int4 = (named_shape("bloom-176b", f) for f in ("bf16", "int8", "int4"))
    C = 14336
    matmul = 12 * C * C
    small = 13 * C * 2  # biases and norms stay bf16
    assert int8.block_bytes[0] == matmul + 9 * C * 4 + small  # one fp32 scale per output channel
    assert int4.block_bytes[0] == matmul // 2 + (matmul // 64) * 3 + small  # a bf16 scale and a u8 zero per 64 weights
    assert int8.fixed_bytes == int4.fixed_bytes == bf16.fixed_bytes == (250880 * C + 4 * C) * 2
    # the blocks shrink to ~1/2 and ~1/4 (+ the group metadata), the embeddings do not
    assert 0.50 < int8.block_bytes[0] / bf16.block_bytes[0] < 0.51
    assert 0.27 < int4.block_bytes[0] / bf16.block_bytes[0] < 0.28
    assert 175 * GB < int8.total_bytes < 180 * GB and 100 * GB < int4.total_bytes < 105 * GB


def test_it_reads_a_checkpoints_bytes_as_the_engine_lays_them_out(tiny_checkpoint):
    from inference.engine import Engine

    s = shape_of_checkpoint(tiny_checkpoint)
    with Engine(tiny_checkpoint, memory_budget="1GiB") as engine:
        p = engine.placement
    assert s.fixed_bytes == p.fixed_bytes and s.block_bytes == p.block_bytes
    assert s.format == "f32" and not s.quantized
    assert kv_cache_bytes(s, 4, 4, 128) == engine.kv_cache_bytes(4, 128)


def test_it_places_blocks_as_the_engine_does_without_a_gpu(tiny_checkpoint, budgets):
    from inference.engine import Engine

    s = shape_of_checkpoint(tiny_checkpoint)
    for name, (budget, n_resident) in budgets.items():
        machine = given_machine(s, gpu=None, host=budget, dtype="float32")
        tiers = place(s, machine, 4, 128)
        with Engine(tiny_checkpoint, memory_budget=budget, max_batch_size=4, max_seq_len=128) as engine:
            assert (tiers.host, tiers.disk) == (engine.placement.resident, engine.placement.streamed), name
        assert len(tiers.host) == n_resident and tiers.host_bytes == engine.placement.planned_bytes


@pytest.fixture(scope="module")
def tiny_bf16(tmp_path_factory):
    from inference.engine.demo import make_demo_checkpoint

    return make_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-bf16", shape="tiny", dtype="bf16", seed=1)


def test_it_plans_a_model_held_whole_in_the_compute_dtype_as_the_engine_does(tiny_bf16):
    from inference.engine import Engine

    s = shape_of_checkpoint(tiny_bf16)
    for budget in (2**30, None):
        with Engine(tiny_bf16, memory_budget=budget or "1GiB", max_batch_size=2, max_seq_len=64, compute_dtype="fp32") as engine:
            if budget is None:  # just short of holding it whole in fp32: blocks convert per pass
                p = engine.placement
                budget = p.fixed_bytes + p.kv_cache_bytes + sum(p.block_bytes) - 1
                engine.close()
                engine = Engine(tiny_bf16, memory_budget=budget, max_batch_size=2, max_seq_len=64, compute_dtype="fp32")
            tiers = place(s, given_machine(s, gpu=None, host=budget, dtype="float32"), 2, 64)
            assert tiers.converted_at_load == engine.converted_at_load
            assert (tiers.host, tiers.disk, tiers.host_bytes) == (engine.placement.resident, engine.placement.streamed,
                                                                  engine.placement.planned_bytes)
            engine.close()
    whole = place(s, given_machine(s, gpu=None, host=2**30, dtype="float32"), 2, 64)
    per_pass = place(s, given_machine(s, gpu=None, host=whole.host_bytes, dtype="float32"), 2, 64)
    assert whole.converted_at_load and not per_pass.converted_at_load
    m = given_machine(s, gpu=None, host=2**30, dtype="float32")
    steps = [step_time(s, m, t, rows_per_seq=1, context=64) for t in (whole, per_pass)]
    assert steps[0].convert_s == 0 < steps[1].convert_s and steps[0].compute_s < steps[1].compute_s


def test_it_measures_the_head_converting_stored_embeddings_where_the_cpu_computes_in_fp32(monkeypatch, tiny_bf16):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # as on an AVX2-only CPU: bf16 weights computed in fp32
    s = shape_of_checkpoint(tiny_bf16)
    m = machine_figures(s, memory_budget=2**30)
    assert m.compute_dtype == "float32" and [b for b, _ in m.compute.head_converting_s] == [1, 4, 16, 64]
    whole = place(s, m, 1, 64)
    assert whole.converted_at_load  # 1 GiB holds this model in fp32: its head converts nothing
    steps = [step_time(s, m, dataclasses.replace(whole, converted_at_load=c), rows_per_seq=1, context=64) for c in (True, False)]
    head = m.compute.head_converting_s[0][1]
    assert steps[1].compute_s - steps[0].compute_s == pytest.approx(head - m.compute.head_s[0][1] + steps[1].convert_s)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert machine_figures(s, memory_budget=2**30).compute.head_converting_s == ()  # nothing to convert


def test_it_fills_the_gpu_then_pinned_host_memory_then_leaves_the_rest_on_disk():
    s = named_shape("bloom-176b", "bf16")
    m = given_machine(s, gpu=24 * GB, host=128 * GB)
    t = place(s, m, 1, 160)
    assert sorted(t.gpu + t.host + t.disk) == list(range(70))
    block = s.block_bytes[0]
    kv = kv_cache_bytes(s, 2, 1, 160)
    # GPU: embeddings, KV cache, two read buffers, then whole blocks up to its memory
    assert t.gpu_bytes == s.fixed_bytes + kv + 2 * block + len(t.gpu) * block <= 24 * GB < t.gpu_bytes + block
    # host: the pinned ring feeding the GPU, then whole blocks up to its budget
    assert t.host_bytes == 2 * block + len(t.host) * block <= 128 * GB < t.host_bytes + block
    assert len(t.disk) == 70 - len(t.gpu) - len(t.host) > 0
    assert minimum_per_tier(s, m, 1, 160) == {"gpu": s.fixed_bytes + kv + 2 * block, "host": 2 * block, "disk": s.total_bytes}


def test_it_runs_at_each_tiers_minimum_and_names_it_below():
    s = named_shape("bloom-176b", "int4")
    low = minimum_per_tier(s, given_machine(s, gpu=1, host=1), 1, 160)
    terms = given_machine(s, gpu=1, host=1).terms
    assert terms.scratch_bytes > 0  # one block's weights dequantized to bf16, on the GPU
    assert low["gpu"] == terms.fixed_bytes + kv_cache_bytes(s, 2, 1, 160) + terms.scratch_bytes + 2 * s.block_bytes[0]
    t = place(s, given_machine(s, gpu=low["gpu"], host=low["host"]), 1, 160)
    assert (len(t.gpu), len(t.host), len(t.disk)) == (0, 0, 70)
    with pytest.raises(BudgetError, match=rf"--gpu-memory .* give at least --gpu-memory {-(-low['gpu'] // 2**20)}MiB"):
        place(s, given_machine(s, gpu=low["gpu"] - 1, host=low["host"]), 1, 160)
    with pytest.raises(BudgetError, match=rf"give at least --memory-budget {-(-low['host'] // 2**20)}MiB"):
        place(s, given_machine(s, gpu=low["gpu"], host=low["host"] - 1), 1, 160)


def test_it_predicts_from_the_slowest_of_the_overlapped_parts():
    s = named_shape("bloom-176b", "int4")
    m = given_machine(s, gpu=80 * GB, host=512 * GB)
    r = plan(s, m, prompt_tokens=128, new_tokens=32)
    one = r.rows[0]
    # nothing on disk: the step moves the host-resident blocks over PCIe, 25 GB/s
    assert one["disk_blocks"] == 0 and one["h2d_bytes"] == one["host_blocks"] * s.block_bytes[0]
    assert one["bound"] == "host->GPU" and one["step_s"] == pytest.approx(one["h2d_bytes"] / 25e9)
    assert one["tokens_per_s"] == pytest.approx(1 / one["step_s"])
    fitting = [row for row in r.rows if row["fits"]]
    # more sequences share each streamed byte: tokens/s grows with the batch while the step stays I/O bound
    assert all(b["tokens_per_s"] > a["tokens_per_s"] for a, b in zip(fitting, fitting[1:]))
    assert r.serves == max(row["batch"] for row in fitting if row["step_s"] <= 1.1 * one["step_s"]) > 1
    f = r.first_batch
    assert f["new_tokens_s"] == pytest.approx(f["prefill_s"] + 31 * f["decode_step_s"])
    # every block is dequantized on every pass, resident or streamed: its cost is compute time
    slow = given_machine(s, gpu=80 * GB, host=512 * GB)
    slow.compute.dequant_s_per_param["int4"] = Figure(27 / 1e12, "given")
    assert plan(s, slow).rows[0]["compute_s"] == pytest.approx(one["compute_s"] + 70 * 12 * 14336**2 * (27 / 1e12 - 2e-14))


def test_it_prints_the_plan_for_a_named_shape(capsys):
    code, out, err = run_cli(capsys, "plan", "--shape", "bloom-176b", "--format", "int4", "--memory-budget", "128GB",
                             "--gpu-memory", "24GB", "--disk-bandwidth", "7GB/s", "--h2d-bandwidth", "25GB/s",
                             "--gpu-tflops", "165", "--gpu-memory-bandwidth", "1TB/s")
    assert code == 0, err
    assert "bloom-176b int4 (named shape): 176.25 B parameters" in out
    assert "disk 7 GB/s (given)" in out and "host->GPU 25 GB/s (given)" in out
    assert "minimum per tier at batch 1: gpu" in out
    rows = [line for line in out.splitlines() if line.strip()[:3].rstrip(" |").isdigit()]
    assert [int(line.split("|")[0]) for line in rows] == [1, 2, 4, 8, 16, 32, 64]
    assert "32 new tokens in" in out and "30 s" in out


def test_it_prints_json_with_the_measured_figures_named(capsys, tiny_checkpoint):
    code, out, err = run_cli(capsys, "plan", "--checkpoint", tiny_checkpoint, "--memory-budget", "2MiB",
                             "--io", "buffered", "--prompt-tokens", "8", "--new-tokens", "8", "--json")
    assert code == 0, err
    data = json.loads(out)
    machine = data["machine"]
    assert machine["disk_bandwidth"]["how"].startswith("measured: median of")
    assert machine["compute"]["flops_how"].startswith("measured") and machine["h2d_bandwidth"] is None
    assert [row["batch"] for row in data["batches"]] == [1, 2, 4, 8, 16, 32, 64]
    assert all(row["tokens_per_s"] > 0 for row in data["batches"] if row["fits"])


@pytest.mark.parametrize("args, message", [
    (["--shape", "bloom-9000b", "--memory-budget", "1GB"], "unknown shape 'bloom-9000b'; named shapes: bloom-176b"),
    (["--shape", "bloom-560m", "--format", "int3", "--memory-budget", "1GB"], "unknown format 'int3'"),
    (["--shape", "bloom-560m", "--memory-budget", "lots"], "--memory-budget: 'lots' is not a size"),
    (["--shape", "bloom-560m", "--memory-budget", "1GB", "--disk-bandwidth", "fast"], "--disk-bandwidth 'fast' is not a bandwidth"),
    (["--shape", "bloom-560m", "--memory-budget", "1GB", "--cpu-gflops", "-3"], "--cpu-gflops must be a positive number"),
    (["--shape", "bloom-560m", "--memory-budget", "100MB", "--disk-bandwidth", "1GB/s"],
     "--memory-budget 95.37MiB is too small for batch 1 x 160 tokens"),
    (["--shape", "bloom-560m", "--memory-budget", "1GB"], "give --disk-bandwidth"),
    (["--shape", "bloom-560m", "--memory-budget", "1GB", "--prompt-tokens", "0"], "--prompt-tokens and --new-tokens must be at least 1"),
    (["--memory-budget", "1GB"], "one of the arguments --checkpoint --shape is required"),
])
def test_it_refuses_bad_input_in_one_line(capsys, args, message):
    code, out, err = run_cli(capsys, "plan", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out


def test_it_names_the_minimum_budget(capsys):
    code, out, err = run_cli(capsys, "plan", "--shape", "bloom-560m", "--memory-budget", "100MB", "--disk-bandwidth", "1GB/s")
    s = named_shape("bloom-560m")
    need = s.fixed_bytes + kv_cache_bytes(s, 2, 1, 160) + 2 * s.block_bytes[0]  # this CPU computes in bf16
    assert f"give at least --memory-budget {-(-need // 2**20)}MiB" in err


def test_it_refuses_format_with_a_checkpoint(capsys, tiny_checkpoint):
    code, out, err = run_cli(capsys, "plan", "--checkpoint", tiny_checkpoint, "--format", "int8", "--memory-budget", "1GB")
    assert code == 2 and "--format goes with --shape" in err


def test_it_asks_for_the_gpu_figures_it_cannot_measure_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the GPU figures are measured")
    code, out, err = run_cli(capsys, "plan", "--shape", "bloom-176b", "--memory-budget", "128GB", "--gpu-memory", "24GB",
                             "--disk-bandwidth", "7GB/s", "--h2d-bandwidth", "25GB/s")
    assert code == 2
    assert "no CUDA device here to measure it on; give --gpu-tflops, --gpu-memory-bandwidth too" in err


@pytest.fixture(scope="module")
def checkpoint_560m(tmp_path_factory):
    from inference.engine.demo import make_demo_checkpoint

    path = make_demo_checkpoint(tmp_path_factory.mktemp("ckpt") / "bloom-560m", shape="bloom-560m", seed=1)
    os.sync()
    return path


def test_it_matches_the_named_shape_to_a_real_checkpoint(checkpoint_560m):
    from transformers import BloomConfig, BloomForCausalLM

    real, named = shape_of_checkpoint(checkpoint_560m), named_shape("bloom-560m")
    with __import__("torch").device("meta"):
        model = BloomForCausalLM(BloomConfig.from_pretrained(checkpoint_560m))
    assert named.params == sum(p.numel() for p in model.parameters())
    # the same bytes, but for the engine's rounding of each contiguous run of tensors to 4 KiB
    assert named.fixed_bytes <= real.fixed_bytes < named.fixed_bytes + 4096 * len(named.global_views)
    assert all(named.block_bytes[0] <= b < named.block_bytes[0] + 4096 * len(named.block_views) for b in real.block_bytes)


def test_it_predicts_the_engines_decode_speed_on_this_machine(checkpoint_560m):
    """The plan's tokens/s from figures measured here against the engine's, most blocks streamed.

    Loose (a factor 2.5; the benchmark checks 25%), on one compute thread: on this shared 2-core machine,
    when other tenants keep a core busy, two torch threads spinning between ops starve the block reader
    thread and the engine falls several-fold below both its disk and its compute (measured 0.1-0.3 of the
    prediction at load 5, 0.8-1.2 with one thread). A batch that misses is measured and run once more,
    and passes if either try agrees; a wrong model misses both."""
    import torch

    prompt, new, budget = 16, 6, 700 * 2**20
    shape = shape_of_checkpoint(checkpoint_560m)
    tries = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _predict_and_run(checkpoint_560m, shape, prompt, new, budget, tries)
    finally:
        torch.set_num_threads(threads)


def _predict_and_run(checkpoint, shape, prompt, new, budget, tries):
    from inference.engine import Engine

    for B in (1, 4):
        for attempt in range(2):
            machine = machine_figures(shape, memory_budget=budget, prompt_tokens=prompt, new_tokens=new)
            row = plan(shape, machine, prompt_tokens=prompt, new_tokens=new, batches=(B,)).rows[0]
            with Engine(checkpoint, memory_budget=budget, max_batch_size=B, max_seq_len=prompt + new) as engine:
                assert len(engine.placement.streamed) == row["disk_blocks"] > len(engine.placement.resident)
                stats = engine.generate([[10 + (7 * i + b) % 4000 for i in range(prompt)] for b in range(B)],
                                        max_new_tokens=new, stop_tokens=[]).stats
            ratio = stats.decode_tokens_per_s / row["tokens_per_s"]
            tries.append((B, round(ratio, 2), round(stats.decode_tokens_per_s, 2), round(row["tokens_per_s"], 2), os.getloadavg()[0]))
            if 1 / 2.5 < ratio < 2.5:
                break
        else:
            pytest.fail(f"measured / predicted tok/s off by more than 2.5x twice: (batch, ratio, measured, predicted, load) {tries}")
