"""Data sets (uint8 images + labels) and batched torch transforms.

Contract used by the trainer and evaluation (the helpers below implement it):

- ``load_data(spec, split) -> ImageDataset`` with split "train" or "test";
  spec is "cifar10:PATH", "cifar100:PATH", "fashion-mnist:PATH",
  "mnist:PATH", "tiny-imagenet:PATH", "imagefolder:PATH" or "digits".
- ``ImageDataset``: ``len(ds)``, ``ds.labels`` (N,) int64, ``ds.classes``,
  ``ds.channels``, ``ds.image_size``, ``ds.mean``/``ds.std`` (per channel, in
  [0, 1] units), ``ds.augment`` (the default train augmentation),
  ``ds.name``, ``ds.source``, ``ds.get_batch(indices) -> (uint8 (B, C, S, S),
  int64 (B,))`` and ``ds.subset(indices) -> ImageDataset``.
- ``train_val_split(n, val_size, seed) -> (train_idx, val_idx)``: deterministic.
- ``make_transform(train: bool, *, augment, image_size, channels, mean, std)``
  returns ``f(uint8 batch on any device, generator) -> float batch``.
"""
