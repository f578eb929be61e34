"""The paper's published figures, as data (SPEC.md, checked against the paper)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperCost:
    dataset: str
    preset: str
    layers: str
    model: str
    flops: str  # as printed in the paper (cut to two decimals)
    first_exit: str | None = None


PAPER_COSTS: tuple[PaperCost, ...] = (
    PaperCost("CIFAR-10", "cifar10", "0-3", "ViT 3 layers", "83.16 M"),
    PaperCost("CIFAR-10", "cifar10", "0-4", "ViT 4 layers", "110.88 M"),
    PaperCost("CIFAR-10", "cifar10", "0-5", "ViT 5 layers", "138.61 M"),
    PaperCost("CIFAR-10", "cifar10", "1-3", "RAViT 1-3", "89.99 M", first_exit="6.83 M"),
    PaperCost("Tiny ImageNet", "tiny-imagenet", "0-0-3", "ViT 3 layers", "11.52 G"),
    PaperCost("Tiny ImageNet", "tiny-imagenet", "0-0-4", "ViT 4 layers", "15.36 G"),
    PaperCost("Tiny ImageNet", "tiny-imagenet", "0-0-6", "ViT 6 layers", "23.04 G"),
    PaperCost("Tiny ImageNet", "tiny-imagenet", "2-0-3", "RAViT 2-0-3", "12.00 G"),
    PaperCost("ImageNet", "imagenet", "0-0-8", "ViT 8 layers", "23.26 G"),
    PaperCost("ImageNet", "imagenet", "0-0-10", "ViT 10 layers", "29.07 G"),
    PaperCost("ImageNet", "imagenet", "0-0-12", "ViT 12 layers", "34.89 G"),
    PaperCost("ImageNet", "imagenet", "1-1-8", "RAViT 1-1-8", "24.43 G"),
    PaperCost("ImageNet", "imagenet", "1-1-10", "RAViT 1-1-10", "30.25 G"),
)


# Table I (CIFAR-10): layers (or "layers tau=T") -> (top-1 %, FLOPs as printed, % of 0-4).
PAPER_TABLE1: dict[str, tuple[float, str, int]] = {
    "0-3": (82.3, "83.16 M", 75),
    "0-4": (84.3, "110.88 M", 100),
    "0-5": (85.3, "138.61 M", 125),
    "1-3": (84.9, "89.99 M", 81),
    "1-3 tau=0.05": (84.6, "80.81 M", 72),
    "1-3 tau=0.15": (82.6, "67.72 M", 61),
}
