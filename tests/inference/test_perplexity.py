"""python -m inference.engine perplexity: held-out perplexity through the engine, and greedy agreement."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from inference.engine.cli import main
from inference.engine.checkpoint import load_tokenizer
from inference.engine.demo import make_demo_checkpoint
from inference.engine.evaluate import held_out_windows, perplexity
from tests.inference.test_demo_train import udhr_subset


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return udhr_subset(tmp_path_factory.mktemp("udhr") / "udhr-40.jsonl")


@pytest.fixture(scope="module")
def trained(subset, tmp_path_factory):
    return make_demo_checkpoint(tmp_path_factory.mktemp("trained") / "tiny", shape="tiny", dtype="fp32", seed=0,
                                corpus=subset, train_steps=20)


@pytest.fixture(scope="module")
def trained_bf16(trained, tmp_path_factory):
    """The same weights rounded to bf16, as make-demo-checkpoint --dtype bf16 saves them."""
    import torch
    from transformers import BloomForCausalLM

    out = tmp_path_factory.mktemp("bf16") / "tiny"
    BloomForCausalLM.from_pretrained(trained, dtype=torch.float32).to(torch.bfloat16).save_pretrained(out, max_shard_size="400KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "training.json"):
        shutil.copy(trained / name, out / name)
    return out


def test_it_agrees_with_transformers_loss_on_the_same_windows(trained, subset):
    import torch
    from transformers import BloomForCausalLM

    windows, _ = held_out_windows(trained, load_tokenizer(trained), corpus=subset, max_windows=24)
    assert windows.shape == (24, 128)
    # 5 windows a pass: the last pass is a partial one
    ours = perplexity(trained, windows, memory_budget="1GiB", batch_size=5, device="cpu")
    model = BloomForCausalLM.from_pretrained(trained, dtype=torch.float32).eval()
    with torch.inference_mode():
        theirs = model(input_ids=windows, labels=windows).loss.double().item()  # the mean over the same 24 x 127 targets
    assert ours["tokens"] == 24 * 127
    assert ours["nll"] == pytest.approx(theirs, rel=1e-4) and ours["perplexity"] == pytest.approx(math.exp(theirs), rel=1e-4)


def test_it_evaluates_the_held_out_text_training_json_names(trained, subset, capsys):
    assert main(["perplexity", "--checkpoint", str(trained), "--corpus", str(subset), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    record = json.loads((trained / "training.json").read_text())
    # The same windows as training evaluated with transformers, now through the engine.
    assert result["windows"] == record["held_out"]["windows"]
    assert result["perplexity"] == pytest.approx(record["held_out"]["perplexity_fp32"], rel=1e-4)
    assert result["held_out"] == {"corpus": subset.name, "rule": record["held_out"]["rule"]} and "reference" not in result
    # Trained for 20 steps only, it is still far better than guessing among its 512 tokens.
    assert result["perplexity"] < 512 / 2


def test_it_reports_greedy_agreement_and_perplexity_change_against_a_reference(trained, trained_bf16, subset, capsys):
    assert main(["perplexity", "--checkpoint", str(trained_bf16), "--reference", str(trained), "--corpus", str(subset),
                 "--max-windows", "16", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    ref = result["reference"]
    assert result["dtype"] == "BF16" and ref["dtype"] == "F32" and result["windows"] == 16
    assert ref["perplexity_change"] == pytest.approx(result["perplexity"] / ref["perplexity"] - 1)
    # bf16 rounding moves the perplexity a little and changes the argmax at a few positions, not none and not many.
    assert abs(ref["perplexity_change"]) < 0.02 and 0.9 < ref["greedy_agreement"] < 1.0, result

    assert main(["perplexity", "--checkpoint", str(trained), "--reference", str(trained), "--corpus", str(subset),
                 "--max-windows", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "greedy next-token agreement 100.00%" in out and "+0.00% from it" in out


def test_it_measures_what_int8_and_int4_cost_the_trained_model(trained_bf16, subset, tmp_path, capsys):
    """The goals of the quantize command, int8 within 1% of bf16's perplexity and int4 within 5%, on a model
    trained for 20 steps: its weights are still close to their random start, with none of the outliers a
    converged model grows, so this checks the measurement and a floor, not the quantizers on a real model."""
    from inference.engine.quantize import quantize_checkpoint

    figures = {}
    for bits, group in ((8, 64), (4, 32)):  # the tiny shape's hidden size, 96, is no multiple of 64
        quantize_checkpoint(trained_bf16, tmp_path / f"int{bits}", bits=bits, group_size=group)
        assert main(["perplexity", "--checkpoint", str(tmp_path / f"int{bits}"), "--reference", str(trained_bf16),
                     "--corpus", str(subset), "--json", "--device", "cpu"]) == 0
        figures[bits] = json.loads(capsys.readouterr().out)
    assert figures[8]["dtype"] == "int8" and figures[4]["dtype"] == "int4" and figures[4]["reference"]["dtype"] == "BF16"
    assert abs(figures[8]["reference"]["perplexity_change"]) < 0.01 and figures[8]["reference"]["greedy_agreement"] > 0.95, figures[8]
    assert abs(figures[4]["reference"]["perplexity_change"]) < 0.05 and figures[4]["reference"]["greedy_agreement"] > 0.85, figures[4]
    assert figures[4]["reference"]["greedy_agreement"] < 1.0  # int4 does change some predictions: the comparison sees it


def test_it_evaluates_any_text_file_with_text(tiny_checkpoint, tmp_path, capsys):
    text = tmp_path / "held.txt"
    text.write_text("Everyone has the right to life, liberty and security of person.\n" * 40, encoding="utf-8")
    assert main(["perplexity", "--checkpoint", str(tiny_checkpoint), "--text", str(text), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["held_out"] == {"text": "held.txt"} and result["windows"] >= 1 and result["perplexity"] > 1


def test_it_says_what_to_give_when_it_has_no_held_out_text(tiny_checkpoint, trained, trained_bf16, subset, tmp_path, capsys):
    def error(*argv):
        assert main(["perplexity", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        return err

    # random weights, no training.json: nothing names a held-out text
    assert "has no training.json" in error("--checkpoint", str(tiny_checkpoint), "--corpus", str(subset))
    assert "give --text FILE" in error("--checkpoint", str(tiny_checkpoint))
    assert "give --corpus" in error("--checkpoint", str(trained))
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"r{n}", "key": "k", "text": f"line {n}"}) + "\n" for n in range(60)))
    assert "is not the one" in error("--checkpoint", str(trained), "--corpus", str(other))
    assert "another tokenizer" in error("--checkpoint", str(trained), "--reference", str(tiny_checkpoint), "--corpus", str(subset),
                                        "--max-windows", "2")
    assert "does not exist" in error("--checkpoint", str(tmp_path / "nowhere"), "--corpus", str(subset))
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    (broken / "training.json").write_text('{"corpus": {}}')
    assert "does not describe a held-out split" in error("--checkpoint", str(broken), "--corpus", str(subset))
    assert "does not exist" in error("--checkpoint", str(trained), "--text", str(tmp_path / "missing.txt"))
    assert "not allowed with argument" in error("--checkpoint", str(trained), "--text", "a.txt", "--corpus", str(subset))
    assert "--max-windows" in error("--checkpoint", str(trained), "--corpus", str(subset), "--max-windows", "-1")
