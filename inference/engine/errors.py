"""Errors a user of the engine can meet. No torch here: web processes may import this."""


class EngineError(Exception):
    """A problem with the user's input or checkpoint, worded as one line that says what to do."""


class CheckpointError(EngineError):
    """The checkpoint directory is missing files, is corrupt, or holds an unsupported model."""


class BudgetError(EngineError):
    """The memory budget cannot hold what the engine needs at minimum."""


class PromptError(EngineError):
    """A prompt is empty or does not fit in the model's context."""
