"""Synthetic exit logits shared by the calibration and controller tests."""

import torch


def synthetic(n, num_exits, classes=10, seed=0, shift=0.0):
    """Logits of `num_exits` exits that see the same images better and better.

    Every image has an ease in [0, 1) - shift and a noise shared by its exits
    (an image hard for exit 1 is hard for exit 2 too); later exits get more
    signal, so accuracy rises with cost, as in a trained RAViT.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    ease = torch.rand(n, generator=g) - shift
    noise = torch.randn(n, classes, generator=g)
    logits = []
    for e in range(num_exits):
        lg = noise + 0.5 * torch.randn(n, classes, generator=g)
        lg[torch.arange(n), labels] += (1.0 + 1.5 * e) * (0.5 + 2.0 * ease)
        logits.append(lg)
    return logits, labels
