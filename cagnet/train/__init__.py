"""Training: the self-training label construction (``cagnet.train.self_training``)."""
