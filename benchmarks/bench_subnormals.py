"""Benchmark: CPU cost of subnormal floats in a trained CaGNet, with and without flushing them.

As a CaGNet model learns, its real features ``sigmoid(h + h * sigmoid(latent))`` saturate, and
the backward pass through saturated sigmoids produces float32 subnormals, which x86 CPUs
process tens of times slower than normal floats. :func:`cagnet.runtime.flush_denormals`
(called by training and evaluation) flushes them to zero.

The benchmark builds the ``tutorial`` config's model, scales its ASPP weights by ``--gain``
so that its features saturate as after training (gain 1 = the fresh model), and times a
forward + backward pass (backbone, contextual module, classifier, cross-entropy) of a
``batch x 3 x crop x crop`` batch with flushing off and on; it prints the seconds per pass,
the share of saturated features and the ratio.

    python benchmarks/bench_subnormals.py [--gains 1,30] [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gains", default="1,30", help="comma-separated ASPP weight gains (default 1,30)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per setting (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()

    from cagnet.config import load_train_config
    from cagnet.models import build_cagnet
    from cagnet.models.contextual import real_feature

    torch.set_num_threads(args.threads)
    config = load_train_config("tutorial")
    torch.manual_seed(0)
    model = build_cagnet(config.model, num_seen=12, num_unseen=4, embedding_dim=100).train()
    crop, batch = config.data.crop_size, config.data.batch_size
    images = torch.randn(batch, 3, crop, crop) * 60.0  # caffe-normalised pixel scale
    fresh_weights = [branch.weight.detach().clone() for branch in model.backbone.aspp.branches]

    def one_pass() -> tuple[float, float]:
        started = time.perf_counter()
        semantic = model.backbone(images)
        feature = real_feature(semantic, model.context(semantic).latent)
        logits = model.classify(feature)
        labels = torch.randint(0, 12, (batch, *logits.shape[-2:]), generator=torch.Generator().manual_seed(0))
        model.zero_grad(set_to_none=True)
        F.cross_entropy(logits, labels).backward()
        saturated = ((feature < 1e-3) | (feature > 1 - 1e-3)).float().mean().item()
        return time.perf_counter() - started, saturated

    print(f"tutorial model, batch {batch} x 3 x {crop} x {crop}, {args.threads} thread(s), "
          f"median of {args.repeats} forward+backward passes")
    print(f"{'ASPP gain':>9} {'saturated':>9} {'no flush s':>10} {'flush s':>8} {'ratio':>6}")
    for gain in (float(g) for g in args.gains.split(",")):
        with torch.no_grad():
            for branch, weight in zip(model.backbone.aspp.branches, fresh_weights):
                branch.weight.copy_(weight * gain)
        medians = {}
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            one_pass()  # warm-up
            runs = [one_pass() for _ in range(args.repeats)]
            medians[flush] = statistics.median(t for t, _ in runs)
            saturated = runs[-1][1]
        print(f"{gain:>9g} {saturated:>9.1%} {medians[False]:>10.3f} {medians[True]:>8.3f} "
              f"{medians[False] / medians[True]:>5.1f}x")
    torch.set_flush_denormal(True)


if __name__ == "__main__":
    main()
