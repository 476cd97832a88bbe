"""Training of CaGNet: schedules, optimisers, checkpoints, distributed execution.

Modules
-------
``engine``          :func:`train` (one schedule of a config), run folder, logs, evaluation, figures
``steps``           the step-1 / step-2 losses of one iteration, self-training labels
``optim``           optimiser parameter groups (DeepLabV2 lr multipliers) and lr schedules
``data``            deterministic, resumable, distributed batch order
``checkpoint``      atomic, safely loadable training checkpoints with RNG states
``distributed``     process group, devices, DistributedDataParallel wrapping
``self_training``   the self-training label construction
"""
from cagnet.train.self_training import self_training_labels

_ENGINE_NAMES = ("train", "Trainer", "TrainResult", "NonFiniteLossError", "read_jsonl", "step_kind")


def __getattr__(name: str):
    # the engine imports torch-heavy modules; load it on first use
    if name in _ENGINE_NAMES:
        from cagnet.train import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'cagnet.train' has no attribute {name!r}")


__all__ = ["self_training_labels", *_ENGINE_NAMES]
