"""The file-decoding input pipeline: DataLoader workers against decoding in this process."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from ravit.data import load_data
from ravit.data.loader import batch_loader, default_workers, seed_worker
from ravit.runs.checkpoint import load_checkpoint
from ravit.training import fit, resolve_config
from ravit.training.distributed import GlobalBatchSampler


@pytest.fixture
def jpeg_folder(tmp_path):
    """imagefolder layout: 2 classes x 8 JPEGs of varied sizes (random pixels, seeded)."""
    g = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(8):
            size = (24 + 3 * i, 20 + 2 * i)
            pixels = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "train" / c / f"{i}.jpg", quality=90)
    return tmp_path


def test_workers_give_the_batches_of_in_process_decoding_epoch_by_epoch(jpeg_folder):
    data = load_data(f"imagefolder:{jpeg_folder}?size=16", "train")
    sampler = GlobalBatchSampler(len(data), 5, seed=0)
    alone = batch_loader(data, sampler, workers=0)
    workers = batch_loader(data, sampler, workers=2, prefetch=1)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        a, b = list(alone), list(workers)
        assert len(a) == len(b) == 4
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == xb.dtype == torch.uint8 and xa.shape[1:] == (3, 16, 16)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        epochs.append(torch.cat([y for _, y in a]))
    assert not torch.equal(epochs[0], epochs[1]), "the persistent workers follow set_epoch"


def test_a_file_that_fails_to_decode_in_a_worker_is_a_one_line_error(jpeg_folder):
    bad = jpeg_folder / "train" / "dog" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:300])  # cut off: found when decoded, not at load
    data = load_data(f"imagefolder:{jpeg_folder}?size=16&verify=0", "train")
    loader = batch_loader(data, GlobalBatchSampler(len(data), 16, seed=0), workers=1)
    with pytest.raises(ValueError, match="3.jpg: not a readable image") as err:
        list(loader)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_training_from_files_through_workers_equals_decoding_in_process(jpeg_folder, tmp_path):
    spec = f"imagefolder:{jpeg_folder}?size=16"
    base = [f"data.spec={spec}", "model.preset=tiny", "data.val_size=4", "train.batch_size=4"]
    base += ["train.epochs=1", "train.device=cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for workers in (0, 2):
            fit(tmp_path / f"w{workers}", resolve_config(None, base + [f"data.workers={workers}"]))
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(tmp_path / "w0" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "w2" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_workers_by_default_only_for_image_files(jpeg_folder):
    assert default_workers(load_data("digits", "train")) == 0
    files = load_data(f"imagefolder:{jpeg_folder}", "train")
    assert 1 <= default_workers(files) <= 8
    assert default_workers(files, processes_per_node=10**6) == 1


def test_seed_worker_seeds_python_and_numpy_from_the_torch_seed():
    threads = torch.get_num_threads()
    try:
        draws = []
        for _ in range(2):
            torch.manual_seed(1234)  # what the DataLoader does in worker i: base_seed + i
            seed_worker(0)
            draws.append((random.random(), float(np.random.rand())))
        torch.manual_seed(99)
        seed_worker(0)
        assert draws[0] == draws[1] != (random.random(), float(np.random.rand()))
    finally:
        torch.set_num_threads(threads)
