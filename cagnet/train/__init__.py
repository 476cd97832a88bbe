"""Training of CaGNet: schedules, optimisers, checkpoints, distributed execution.

Modules
-------
``engine``          :func:`train`: the training loop of one schedule of a config (checks, checkpoints, evaluation)
``runs``            run folders: logs (JSON lines), figures, recipes, finished runs, their models
``steps``           the step-1 / step-2 losses of one iteration, self-training labels
``optim``           optimiser parameter groups (DeepLabV2 lr multipliers) and lr schedules
``loading``         a configuration's dataset, training and scored splits, class embeddings
``batches``         deterministic, resumable, distributed batch order
``checkpoint``      atomic, safely loadable training checkpoints with RNG states
``distributed``     process group, devices, DistributedDataParallel wrapping
``self_training``   the self-training label construction
``baselines``       training of the comparison methods SPNet, ZS3Net and ZS3Net+ST
"""
from cagnet.train.self_training import self_training_labels

_ENGINE_NAMES = ("train", "Trainer", "TrainResult", "NonFiniteLossError", "step_kind")
_RUNS_NAMES = ("read_jsonl", "run_recipe", "finished_run", "current_run", "load_run_model")


def __getattr__(name: str):
    # the engine and the run folders import torch-heavy modules; load them on first use
    if name in _ENGINE_NAMES:
        from cagnet.train import engine

        return getattr(engine, name)
    if name in _RUNS_NAMES:
        from cagnet.train import runs

        return getattr(runs, name)
    raise AttributeError(f"module 'cagnet.train' has no attribute {name!r}")


__all__ = ["self_training_labels", *_ENGINE_NAMES, *_RUNS_NAMES]
