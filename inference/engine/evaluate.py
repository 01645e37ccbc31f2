"""Held-out perplexity with the engine itself, and greedy next-token agreement with a reference checkpoint.

    python -m inference.engine perplexity --checkpoint int4/ --reference bf16/ --corpus udhr.jsonl.gz

The held-out text is the one the checkpoint's training.json names (see train.py), cut into the same
windows as at training; --text evaluates any text file instead. Each window is one forward pass of
Engine.logits (no context across windows); the perplexity is exp of the token-weighted mean next-token
NLL, computed in fp32 from the engine's fp32 logits and summed in fp64. The agreement is the fraction of
the same positions where the checkpoint's most likely next token is the reference's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .errors import EngineError
from .train import EVAL_WINDOWS, SEQ_LEN, eval_windows, read_corpus, token_stream


def training_record(checkpoint: Path) -> dict | None:
    """The checkpoint's training.json, or None when it has none (random weights, a real release)."""
    path = Path(checkpoint) / "training.json"
    if not path.is_file():
        return None
    needed = (("corpus", "sha256"), ("corpus", "name"), ("held_out", "seq_len"), ("held_out", "rule"))
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        complete = all(record[part][key] for part, key in needed)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        complete = False
    if not complete:
        raise EngineError(f"{path} does not describe a held-out split (corpus sha256 and name, held_out seq_len and rule); "
                          "make the checkpoint again with make-demo-checkpoint --train")
    return record


def weights_label(checkpoint: Path, engine) -> str:
    """int8 / int4 for a checkpoint written by the quantize command (its config.json's manifest), else the
    weights' dtype (BF16, F32...)."""
    quantization = json.loads((Path(checkpoint) / "config.json").read_text()).get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("bits"):
        return f"int{quantization['bits']}"
    return engine.checkpoint.dtype


def held_out_windows(checkpoint: Path, tokenizer, *, corpus: Path | None = None, text: Path | None = None,
                     max_windows: int | None = None, reference: Path | None = None):
    """(windows [N, T] of token ids, a description of the text they come from). The held-out split is the
    checkpoint's training.json's, or else the reference's (a quantized copy of a trained checkpoint)."""
    eos = tokenizer.token_to_id("</s>")
    if text is not None:
        try:
            content = Path(text).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EngineError(f"text file {text} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineError(f"text file {text} cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
        if not content.strip():
            raise EngineError(f"text file {text} is empty; give it some text to evaluate")
        limit = EVAL_WINDOWS if max_windows is None else max_windows
        stream = token_stream(tokenizer, [content], eos if eos is not None else 0)
        return eval_windows(stream, seq_len=SEQ_LEN, max_windows=limit), {"text": Path(text).name}
    record = training_record(checkpoint) or (training_record(reference) if reference is not None else None)
    if record is None:
        raise EngineError(f"{checkpoint} has no training.json, so it names no held-out text: give --text FILE, "
                          "or evaluate a checkpoint made with make-demo-checkpoint --train")
    if corpus is None:
        raise EngineError(f"give --corpus: the corpus {checkpoint} was trained on ({record['corpus']['name']}, "
                          "e.g. ../shared/corpora/udhr/udhr.jsonl.gz), whose held-out part its training.json names")
    languages = record["corpus"].get("languages", "all")
    data = read_corpus(corpus, None if languages == "all" else languages)
    if data.description["sha256"] != record["corpus"]["sha256"]:
        raise EngineError(f"corpus {corpus} is not the one {checkpoint} was trained on (sha256 {data.description['sha256'][:12]}..., "
                          f"training.json says {record['corpus']['sha256'][:12]}...); give that corpus")
    held = record["held_out"]
    limit = held.get("max_windows", EVAL_WINDOWS) if max_windows is None else max_windows
    stream = token_stream(tokenizer, data.held_out, eos)
    return eval_windows(stream, seq_len=held["seq_len"], max_windows=limit), {"corpus": record["corpus"]["name"], "rule": held["rule"]}


def perplexity(checkpoint: str | Path, windows, *, memory_budget: int | str = "4GiB", reference: str | Path | None = None,
               batch_size: int = 16, device: str | None = None, compute_dtype: str = "auto") -> dict:
    """Perplexity of checkpoint over windows [N, T] through the engine; with a reference checkpoint, its
    perplexity too and the greedy next-token agreement between the two. compute_dtype: the engines' ("auto"
    resolves per checkpoint; name one to have both compute alike, so that a difference is the weights')."""
    import torch
    import torch.nn.functional as F

    from .generate import Engine

    if batch_size < 1:
        raise EngineError("--batch-size must be at least 1")
    t0 = time.perf_counter()
    N, T = windows.shape
    load = {"memory_budget": memory_budget, "max_batch_size": batch_size, "max_seq_len": T, "device": device,
            "compute_dtype": compute_dtype}
    engines = [Engine(checkpoint, **load)]
    try:
        if reference is not None:
            engines.append(Engine(reference, **load))
            _check_same_vocabulary(engines[0], engines[1], checkpoint, reference)
        nll = [0.0] * len(engines)  # summed in fp64: a long evaluation adds up many fp32 terms
        agree = 0
        for chunk in windows.split(batch_size):
            mask = torch.ones_like(chunk)
            targets = chunk[:, 1:].reshape(-1).to(engines[0].device)  # [B*(T-1)]
            predicted = []
            for n, engine in enumerate(engines):
                logits = engine.logits(chunk, mask)[:, :-1].reshape(targets.numel(), -1)  # [B*(T-1), V] fp32
                nll[n] += F.cross_entropy(logits, targets, reduction="sum").double().item()
                predicted.append(logits.argmax(-1))
            if reference is not None:
                agree += (predicted[0] == predicted[1].to(predicted[0].device)).sum().item()
        tokens = N * (T - 1)
        result = {"checkpoint": str(checkpoint), "dtype": weights_label(checkpoint, engines[0]),
                  "compute_dtype": str(engines[0].dtype).removeprefix("torch."), "windows": N, "window_tokens": T,
                  "tokens": tokens, "nll": nll[0] / tokens, "perplexity": math.exp(nll[0] / tokens)}
        if reference is not None:
            ref_ppl = math.exp(nll[1] / tokens)
            result["reference"] = {"checkpoint": str(reference), "dtype": weights_label(reference, engines[1]),
                                   "compute_dtype": str(engines[1].dtype).removeprefix("torch."), "nll": nll[1] / tokens,
                                   "perplexity": ref_ppl, "perplexity_change": result["perplexity"] / ref_ppl - 1,
                                   "greedy_agreement": agree / tokens}
    finally:
        for engine in engines:
            engine.close()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _check_same_vocabulary(engine, ref, checkpoint, reference) -> None:
    # Agreement compares token ids: both must mean the same text by the same id.
    if engine.config.vocab_size != ref.config.vocab_size or engine.tokenizer.get_vocab() != ref.tokenizer.get_vocab():
        raise EngineError(f"{reference} has another tokenizer or vocabulary than {checkpoint}; "
                          "the agreement compares the token ids of one model's checkpoints (e.g. bf16 and its int4 quantization)")


def run(args) -> int:
    """The perplexity subcommand."""
    if args.max_windows is not None and args.max_windows < 0:
        raise EngineError("--max-windows must be 0 (all) or more")
    import torch

    from .checkpoint import Checkpoint, load_tokenizer
    from .config import parse_size

    budget = parse_size(args.memory_budget)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise EngineError("--device cuda, but torch sees no CUDA device here")
    Checkpoint.open(args.checkpoint)  # a missing or broken checkpoint is named before the corpus is read
    windows, source = held_out_windows(args.checkpoint, load_tokenizer(args.checkpoint), corpus=args.corpus, text=args.text,
                                       max_windows=args.max_windows, reference=args.reference)
    result = perplexity(args.checkpoint, windows, memory_budget=budget, reference=args.reference,
                        batch_size=args.batch_size, device=args.device, compute_dtype=args.compute_dtype)
    result["held_out"] = source
    if args.json:
        print(json.dumps(result, indent=1, ensure_ascii=False))
        return 0
    print(f"{result['checkpoint']} ({result['dtype']}, computing in {result['compute_dtype']}): perplexity {result['perplexity']:.3f} "
          f"(mean NLL {result['nll']:.4f}) over {result['windows']} windows of {result['window_tokens']} tokens, "
          f"{result['tokens']:,} predicted tokens, in {result['seconds']:.1f} s")
    if "reference" in result:
        ref = result["reference"]
        print(f"reference {ref['checkpoint']} ({ref['dtype']}): perplexity {ref['perplexity']:.3f}; the checkpoint's is "
              f"{ref['perplexity_change']:+.2%} from it; greedy next-token agreement {ref['greedy_agreement']:.2%}")
    return 0
