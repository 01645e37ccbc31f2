"""Offloaded inference engine: runs a model bigger than memory within a memory budget.

Pure PyTorch, no Django. Library use:

    from inference.engine import Engine
    with Engine("ckpt/", memory_budget="1.5GiB", max_batch_size=16) as engine:
        result = engine.generate(["Hello"], max_new_tokens=32)

CLI: python -m inference.engine generate|quantize|plan|perplexity|make-demo-checkpoint --help

Engine and friends load torch on first use, so that importing this package (for EngineError, say)
stays cheap for processes that never run a model.
"""

from .errors import BudgetError, CheckpointError, EngineError, PromptError

__all__ = ["Engine", "Generation", "Completion", "RunStats", "EngineError", "CheckpointError", "BudgetError",
           "PromptError", "parse_size"]


def __getattr__(name):
    if name in ("Engine", "Generation", "Completion", "RunStats"):
        from . import generate
        return getattr(generate, name)
    if name == "parse_size":
        from .config import parse_size
        return parse_size
    raise AttributeError(name)
