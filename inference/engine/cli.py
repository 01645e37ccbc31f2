"""python -m inference.engine generate ... | make-demo-checkpoint ... | perplexity ...

Every error a user can cause (missing files, another architecture, a corrupt shard, an empty or too long
prompt, a budget too small) ends the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import EngineError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise EngineError(f"{message} (see python -m inference.engine {self.prog.split()[-1]} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m inference.engine", description="Offloaded inference within a memory budget.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    g = sub.add_parser("generate", help="generate completions for one or more prompts, batched")
    g.add_argument("--checkpoint", required=True, type=Path, help="directory with config.json, *.safetensors, tokenizer.json")
    g.add_argument("--memory-budget", required=True, help="resident weights + KV cache + read buffers, e.g. 1.5GiB")
    g.add_argument("--max-new-tokens", type=int, default=32)
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt; repeat for a batch")
    src.add_argument("--prompts-file", type=Path, help="one prompt per non-blank line")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="the most likely token at each step (the default)")
    mode.add_argument("--temperature", type=float, help="sample at this temperature instead")
    g.add_argument("--top-p", type=float, help="with --temperature: nucleus sampling mass (default 1.0)")
    g.add_argument("--seed", type=int, help="with --temperature: seed for reproducible sampling")
    g.add_argument("--stop-token", type=int, action="append", help="token id ending a sequence (default: the model's EOS); repeatable")
    g.add_argument("--json", action="store_true", help="print completions with token ids and the figures as JSON")
    g.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    g.add_argument("--io", choices=["direct", "buffered"], default="direct", help="how streamed blocks are read (default direct: O_DIRECT)")
    g.add_argument("--threads", type=int, help="torch compute threads (default: torch's choice)")
    g.add_argument("--compute-dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="what the blocks compute in; auto: the checkpoint's dtype, or fp32 on a CPU without native bf16")

    q = sub.add_parser("quantize", help="write an int8 or int4 copy of a checkpoint, which streams a half or a quarter of the bytes")
    q.add_argument("--checkpoint", required=True, type=Path, help="the unquantized checkpoint directory")
    q.add_argument("--bits", required=True, type=int, help="8 (per output channel) or 4 (per group of weights)")
    q.add_argument("--out", required=True, type=Path, help="a new or empty directory")
    q.add_argument("--group-size", type=int, default=64, help="with --bits 4: weights per scale and zero point (default 64)")
    q.add_argument("--max-shard-size", default="2GiB", help="largest output shard (default 2GiB)")

    d = sub.add_parser("make-demo-checkpoint", help="a checkpoint with real shapes, random or trained weights and a trained tokenizer")
    d.add_argument("out", type=Path)
    d.add_argument("--shape", required=True, choices=["tiny", "small", "bloom-560m", "bloom-1b7"])
    d.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--corpus", type=Path, help="text to train the tokenizer on (.txt, .jsonl or .jsonl.gz with a text field); "
                                               "with --train, the JSON-lines corpus the model learns (the UDHR)")
    budget = d.add_mutually_exclusive_group()
    budget.add_argument("--train", type=float, metavar="SECONDS", help="train the model on --corpus for this wall-clock budget")
    budget.add_argument("--train-steps", type=int, metavar="N", help="train for N steps instead: the same weights for the same seed and --threads")
    d.add_argument("--languages", default="demo", help="with --train: the corpus's lang tags to learn, comma-separated; "
                                                     "'all' for every record; default 'demo', 24 languages (demo.DEMO_LANGUAGES)")
    d.add_argument("--threads", type=int, help="torch compute threads (default: torch's choice)")

    e = sub.add_parser("perplexity", help="held-out perplexity of a checkpoint, and its greedy agreement with a reference")
    e.add_argument("--checkpoint", required=True, type=Path)
    e.add_argument("--reference", type=Path, help="a checkpoint of the same model (e.g. the bf16 one beside an int4 one): "
                                                  "the fraction of positions where both predict the same next token")
    text = e.add_mutually_exclusive_group()
    text.add_argument("--corpus", type=Path, help="the corpus the checkpoint was trained on (its training.json names the held-out part)")
    text.add_argument("--text", type=Path, help="a UTF-8 text file to evaluate instead, whole")
    e.add_argument("--memory-budget", default="4GiB", help="for each engine loaded (default 4GiB)")
    e.add_argument("--max-windows", type=int, help="windows of 128 tokens evaluated, spread evenly (default 256; 0: all)")
    e.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    e.add_argument("--json", action="store_true", help="print the figures as JSON")
    e.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    e.add_argument("--compute-dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="what both engines compute in (default auto: the checkpoint's dtype where the device computes it natively)")
    e.add_argument("--threads", type=int, help="torch compute threads (default: torch's choice)")

    from .plan import add_parser as add_plan_parser  # no torch at import: the plan loads it when it measures

    add_plan_parser(sub)
    return p


def _prompts(args) -> list[str]:
    if args.prompt is not None:
        return args.prompt
    try:
        lines = args.prompts_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EngineError(f"prompts file {args.prompts_file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"prompts file {args.prompts_file} cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise EngineError(f"prompts file {args.prompts_file} has no prompts (one per non-blank line)")
    return prompts


def _generate(args) -> int:
    if args.temperature is None and (args.top_p is not None or args.seed is not None):
        raise EngineError("--top-p and --seed apply to sampling; add --temperature")
    if args.max_new_tokens < 1:
        raise EngineError("--max-new-tokens must be at least 1")
    prompts = _prompts(args)
    for n, p in enumerate(prompts, 1):
        if not p.strip():
            raise EngineError(f"prompt {n} is empty; give it some text")
    from .config import parse_size

    budget = parse_size(args.memory_budget)
    import torch

    from .generate import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda, but torch sees no CUDA device here")
    from .checkpoint import load_tokenizer

    # The budget reserves a KV cache for exactly these prompts; one longer than the context fails in generate().
    tokenizer = load_tokenizer(args.checkpoint) if args.checkpoint.is_dir() else None
    longest = max(len(tokenizer.encode(p, add_special_tokens=False).ids) for p in prompts) if tokenizer else 0
    engine = Engine(args.checkpoint, memory_budget=budget, max_batch_size=len(prompts), device=args.device, io=args.io,
                    max_seq_len=longest + args.max_new_tokens, compute_dtype=args.compute_dtype)
    try:
        result = engine.generate(prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature or 0.0,
                                 top_p=args.top_p if args.top_p is not None else 1.0, seed=args.seed,
                                 stop_tokens=args.stop_token)
    finally:
        engine.close()
    if args.json:
        print(json.dumps({"completions": [c.__dict__ for c in result.completions],
                          "figures": result.stats.as_dict(),
                          "placement": {"resident": list(engine.placement.resident), "streamed": list(engine.placement.streamed)}},
                         ensure_ascii=False, indent=1))
    else:
        for n, c in enumerate(result.completions, 1):
            print(f"--- {n} ({len(c.token_ids)} tokens, {c.finish_reason})")
            print(f"{c.prompt}{c.text}")
        print(f"--- figures: {result.stats.summary()}")
    return 0


def _make_demo_checkpoint(args) -> int:
    if (args.train is not None or args.train_steps is not None) and args.corpus is None:
        raise EngineError("--train needs --corpus: the UDHR corpus, e.g. ../shared/corpora/udhr/udhr.jsonl.gz")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from .demo import DEMO_LANGUAGES, make_demo_checkpoint

    languages = {"demo": list(DEMO_LANGUAGES), "all": None}.get(args.languages)
    if args.languages not in ("demo", "all"):
        languages = [tag.strip() for tag in args.languages.split(",") if tag.strip()]
        if not languages:
            raise EngineError("--languages needs lang tags such as fr,pt-BR,zh-Hans, or all, or demo")
    out = make_demo_checkpoint(args.out, shape=args.shape, dtype=args.dtype, seed=args.seed, corpus=args.corpus,
                               train_seconds=args.train, train_steps=args.train_steps, languages=languages, log=print)
    kind = "trained" if args.train is not None or args.train_steps is not None else "random-weight"
    print(f"wrote a {kind} {args.shape} demo checkpoint ({args.dtype}) to {out}")
    return 0


def _quantize(args) -> int:
    if args.bits not in (8, 4):
        raise EngineError(f"--bits must be 8 or 4, not {args.bits}")
    from .quantize import quantize_checkpoint

    report = quantize_checkpoint(args.checkpoint, args.out, bits=args.bits, group_size=args.group_size,
                                 max_shard_size=args.max_shard_size, progress=True)
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args = _parser().parse_args(argv)
        if args.command == "generate":
            return _generate(args)
        if args.command == "quantize":
            return _quantize(args)
        if args.command == "plan":
            from .plan import run as run_plan

            return run_plan(args)
        if args.command == "perplexity":
            from .evaluate import run as run_perplexity

            return run_perplexity(args)
        return _make_demo_checkpoint(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
