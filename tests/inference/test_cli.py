"""The command line: a real run end to end, and one clear line for each bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference.engine.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def generate_args(checkpoint, *extra, budget="1GiB"):
    return ["generate", "--checkpoint", checkpoint, "--memory-budget", budget, "--max-new-tokens", "4", *extra]


def test_it_generates_from_the_command_line_with_json(tiny_checkpoint):
    proc = subprocess.run(
        [sys.executable, "-m", "inference.engine", *map(str, generate_args(tiny_checkpoint, "--prompt", "Watu wote", "--prompt", "All human", "--json"))],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [c["prompt"] for c in data["completions"]] == ["Watu wote", "All human"]
    assert all(len(c["token_ids"]) == 4 and c["finish_reason"] == "length" for c in data["completions"])
    figures = data["figures"]
    for key in ("bytes_read_per_decode_step", "read_bandwidth_bytes_per_s", "ttft_s", "decode_tokens_per_s", "peak_rss_bytes"):
        assert key in figures
    assert figures["decode_tokens_per_s"] > 0 and figures["peak_rss_bytes"] > 0


def test_it_prints_completions_and_figures_as_text(capsys, tiny_checkpoint, budgets):
    code, out, _ = run_cli(capsys, *generate_args(tiny_checkpoint, "--prompt", "Tous les", budget=budgets["none"][0] * 4))
    assert code == 0
    assert out.splitlines()[1].startswith("Tous les")
    assert "time to first token" in out and "tok/s" in out and "read per decode step" in out


def broken_copy(src: Path, dst: Path, how: str) -> Path:
    shutil.copytree(src, dst)
    shards = sorted(dst.glob("model-*.safetensors"))
    if how == "no-tokenizer":
        (dst / "tokenizer.json").unlink()
    elif how == "missing-shard":
        shards[1].unlink()
    elif how == "truncated-shard":
        with open(shards[1], "r+b") as f:
            f.truncate(shards[1].stat().st_size - 100)
    elif how == "garbage-shard":
        shards[0].write_bytes(b"\xff" * 64)
    elif how == "llama":
        config = json.loads((dst / "config.json").read_text())
        config["model_type"] = "llama"
        (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("how, message", [
    ("no-tokenizer", "has no tokenizer.json"),
    ("missing-shard", "is missing shard model-00002"),
    ("truncated-shard", "corrupt shard"),
    ("garbage-shard", "corrupt shard"),
    ("llama", "holds a llama model; this engine runs: bloom"),
])
def test_it_refuses_a_bad_checkpoint_in_one_line(capsys, tmp_path, tiny_checkpoint, how, message):
    bad = broken_copy(tiny_checkpoint, tmp_path / how, how)
    code, out, err = run_cli(capsys, *generate_args(bad, "--prompt", "Hello"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize("args, message", [
    (["--prompt", "Hello", "--prompt", ""], "prompt 2 is empty"),
    (["--prompt", "word " * 3000], "exceeds the model's context of 2048 tokens"),
    (["--prompts-file", "/nonexistent/prompts.txt"], "prompts file /nonexistent/prompts.txt does not exist"),
    (["--prompt", "Hi", "--seed", "3"], "--top-p and --seed apply to sampling"),
    (["--prompt", "Hi", "--greedy", "--temperature", "0.7"], "not allowed with argument"),
    ([], "one of the arguments --prompt --prompts-file is required"),
])
def test_it_refuses_bad_arguments_in_one_line(capsys, tiny_checkpoint, args, message):
    code, out, err = run_cli(capsys, *generate_args(tiny_checkpoint, *args))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_it_refuses_a_missing_checkpoint_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, *generate_args(tmp_path / "nowhere", "--prompt", "Hi"))
    assert code == 2 and err == f"error: checkpoint directory {tmp_path / 'nowhere'} does not exist\n"


def test_it_names_the_minimum_budget_and_runs_at_it(capsys, tiny_checkpoint):
    code, _, err = run_cli(capsys, *generate_args(tiny_checkpoint, "--prompt", "Hi", budget="100KiB"))
    assert code == 2 and err.count("\n") == 1 and "memory budget 100.00KiB is too small" in err
    minimum = err.split("--memory-budget ")[1].split()[0]
    code, out, _ = run_cli(capsys, *generate_args(tiny_checkpoint, "--prompt", "Hi", budget=minimum))
    assert code == 0 and "streamed 0" not in out
    code, _, err = run_cli(capsys, *generate_args(tiny_checkpoint, "--prompt", "Hi", budget=f"{int(minimum[:-3]) - 1}MiB"))
    assert code == 2 and "is too small" in err
