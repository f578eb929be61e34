"""Which of a ViT's blocks start each branch of a RAViT (plain Python: the CLI lists the
rules without importing torch)."""

from __future__ import annotations

ASSIGNMENTS = ("first", "spread", "last", "prefix")


def assign_blocks(depth: int, depths: list[int], rule: str) -> list[list[int]]:
    """Which of the ViT's `depth` blocks each present branch starts from, coarse to fine.

    first: in order from the first block (a prefix of the ViT, dealt out);
    spread: evenly spaced over the whole ViT, in order;
    last: the last branch takes the ViT's last blocks, the earlier ones its first;
    prefix: every branch takes the ViT's first blocks, as many as its depth (copies,
    so each branch starts as a shallower ViT and sees tokens in the order the ViT's
    blocks expect them; the blocks past the deepest branch are left out).
    """
    if rule not in ASSIGNMENTS:
        raise ValueError(f"unknown block assignment {rule!r}; expected one of {ASSIGNMENTS}")
    if rule == "prefix":
        if max(depths) > depth:
            raise ValueError(f"a branch of {max(depths)} layers needs {max(depths)} blocks; "
                             f"the ViT has {depth}")  # fmt: skip
        return [list(range(d)) for d in depths]
    total = sum(depths)
    if total > depth:
        raise ValueError(f"layers {'-'.join(map(str, depths))} need {total} blocks; the ViT has "
                         f"{depth}")  # fmt: skip
    if rule == "first":
        order = list(range(total))
    elif rule == "spread":
        order = [round(i * (depth - 1) / max(1, total - 1)) for i in range(total)] if total > 1 \
            else [depth - 1]  # fmt: skip
    else:
        order = list(range(total - depths[-1])) + list(range(depth - depths[-1], depth))
    out, start = [], 0
    for d in depths:
        out.append(order[start : start + d])
        start += d
    return out
