"""One module per architecture. Each provides weight_names, weight_shapes, and the forward pieces
(embed, block, head) that the engine drives; the offloader never needs to know which one it serves."""

from __future__ import annotations

from ..errors import CheckpointError
from . import bloom

ARCHITECTURES = {bloom.MODEL_TYPE: bloom}


def get_architecture(model_type, path):
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise CheckpointError(f"{path} holds a {model_type or 'unnamed'} model; this engine runs: {supported}") from None
