"""Data-parallel training: the batch split, error agreement, and real torchrun launches (Gloo)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ravit
from ravit.runs.checkpoint import load_checkpoint
from ravit.training import distributed as D
from ravit.training import fit, resolve_config
from ravit.training.loop import prepare

# augment=none: one process and two see exactly the same images, so their
# weights may differ only by the order in which floating-point sums are taken.
SMALL = [
    "model.preset=digits",
    "model.layers=1-1",
    "model.embed_dim=32",
    "model.num_heads=2",
    "data.spec=digits",
    "data.val_size=200",
    "data.augment=none",
    "train.batch_size=128",
    "train.epochs=2",
    "train.device=cpu",
]
TOLERANCE = 1e-4  # measured: 6e-6 after 2 epochs (20 steps)
LAUNCH_TIMEOUT_S = 240


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.pt")["model"]


def max_difference(a: dict, b: dict) -> float:
    """Largest weight difference, leaving out the key projections' biases: adding a constant
    to every key shifts a softmax row by a constant, so their exact gradient is 0 and Adam
    turns the rounding noise of their computed gradient into updates of about lr, which a
    different order of sums changes (measured 2.0e-4 after 20 steps with PyTorch's default
    init; every other weight 1.2e-7 at most)."""
    assert a.keys() == b.keys()

    def comparable(k: str, t: torch.Tensor) -> torch.Tensor:
        if k.endswith("attn.qkv.bias"):  # (3D,): q, k, v
            d = t.shape[0] // 3
            return torch.cat([t[:d], t[2 * d :]])
        return t

    return max((comparable(k, a[k]) - comparable(k, b[k])).abs().max().item() for k in a)


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun (`python -m torch.distributed.run --standalone`) running the ravit CLI."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAVIT_NO_MALLOC_TUNING": "1"}
    src = str(Path(ravit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "ravit", *args]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its workers: one session
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {LAUNCH_TIMEOUT_S} s: {cmd}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: one process, the same global batch of 128."""
    run = tmp_path_factory.mktemp("one") / "run"
    fit(run, resolve_config(None, SMALL))
    return run


def test_two_gloo_processes_end_with_the_weights_of_one_and_resume_with_one(one_process, tmp_path):
    two = tmp_path / "two"
    proc = torchrun(["train", "--out", str(two), "--no-progress", *SMALL])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch   2") == 1, "rank 0 alone prints"
    assert proc.stdout.count("run saved in") == 1
    initial = prepare(resolve_config(None, SMALL)).model.state_dict()
    assert max_difference(weights(one_process), initial) > 100 * TOLERANCE, "training moved"
    assert max_difference(weights(two), weights(one_process)) < TOLERANCE
    records = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in records] == [2, 2]
    env = json.loads((two / "env.json").read_text())
    assert env["world_size"] == 2

    # The 2-process run resumed by 1 process continues as the 1-process run does.
    copy = tmp_path / "one"
    subprocess.run(["cp", "-r", str(one_process), str(copy)], check=True)
    fit(copy, resume=True, overrides=["train.epochs=3"])
    records = fit(two, resume=True, overrides=["train.epochs=3"])
    assert [r["world_size"] for r in records] == [2, 2, 1]
    assert max_difference(weights(two), weights(copy)) < TOLERANCE


def test_every_process_stops_on_an_existing_run_folder_with_one_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    proc = torchrun(["train", "--out", str(run), "--no-progress", *SMALL])
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert output.count("ravit: error:") == 1, output[-3000:]
    assert "already holds a run" in output and "Traceback" not in proc.stdout
    assert (run / "config.yaml").read_text() == "model: {}\n", "left untouched"


def test_gradient_accumulation_matches_one_big_batch(one_process, tmp_path):
    fit(tmp_path / "acc", resolve_config(None, SMALL + ["train.grad_accum=2"]))
    assert max_difference(weights(tmp_path / "acc"), weights(one_process)) < TOLERANCE


# -- the split of a global batch ---------------------------------------------------


def test_processes_share_each_global_batch_of_the_single_process_order():
    n, batch = 103, 16
    alone = D.GlobalBatchSampler(n, batch, seed=3)
    ranks = [D.GlobalBatchSampler(n, batch, seed=3, world_size=3, rank=r) for r in range(3)]
    for epoch in (0, 5):
        for s in [alone, *ranks]:
            s.set_epoch(epoch)
        seen = []
        for step in range(alone.steps_per_epoch):
            (whole,) = alone.micro_batches(step)
            pieces = [idx for s in ranks for idx in s.micro_batches(step)]
            assert torch.equal(torch.cat(pieces), whole)
            sizes = [len(idx) for idx in pieces]
            assert max(sizes) - min(sizes) <= 1
            seen += whole.tolist()
        assert sorted(seen) == list(range(n)), "every image once per epoch"
    assert not torch.equal(alone.order, D.GlobalBatchSampler(n, batch, seed=4).order)


def test_processes_times_accumulation_fix_the_micro_batches_and_their_seeds():
    accum = D.GlobalBatchSampler(50, 20, seed=0, grad_accum=2)
    ranks = [D.GlobalBatchSampler(50, 20, seed=0, world_size=2, rank=r) for r in (0, 1)]
    for step in range(accum.steps_run):
        assert [p.tolist() for p in accum.micro_batches(step)] == [
            r.micro_batches(step)[0].tolist() for r in ranks
        ]
    assert [accum.piece(m) for m in (0, 1)] == [r.piece(0) for r in ranks]
    seeds = {D.step_seed(0, e, s, p, k) for e in (0, 1) for s in (0, 1) for p in (0, 1)
             for k in (1, 2)}  # fmt: skip
    assert len(seeds) == 16


def test_a_last_batch_smaller_than_the_pieces_is_skipped():
    s = D.GlobalBatchSampler(33, 16, seed=0, world_size=2, grad_accum=2)
    assert (s.steps_per_epoch, s.steps_run, len(s)) == (3, 2, 4)
    assert all(len(idx) == 4 for idx in s)
    assert D.GlobalBatchSampler(33, 16, seed=0).steps_run == 3
    with pytest.raises(ValueError, match="at least one image per micro-batch"):
        D.GlobalBatchSampler(100, 3, seed=0, world_size=2, grad_accum=2)


# -- the launcher's environment and agreeing on errors ------------------------------


def test_the_torchrun_environment_is_read_and_checked():
    assert D.context_from_env({}) == D.DistContext()
    assert not D.context_from_env({"WORLD_SIZE": "1", "RANK": "0"}).is_distributed
    ctx = D.context_from_env(
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    )
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (3, 4, 1, False)
    with pytest.raises(ValueError, match="RANK='x'"):
        D.context_from_env({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="inconsistent launcher environment"):
        D.context_from_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})


def _agree_as(monkeypatch, rank: int, others: list, fn):
    """`agree` on `rank` of a group whose other ranks report `others` (None: success)."""

    def gather(out, mine):
        out[:] = others[:rank] + [mine] + others[rank:]

    monkeypatch.setattr(D.dist, "all_gather_object", gather)
    return D.agree(D.DistContext(rank=rank, world_size=len(others) + 1), fn)


def test_agree_raises_on_every_rank_when_one_fails(monkeypatch):
    def boom():
        raise ValueError("bad data on this node")

    assert _agree_as(monkeypatch, 0, [None], lambda: 7) == 7
    with pytest.raises(ValueError, match="bad data on this node") as err:
        _agree_as(monkeypatch, 0, [None], boom)
    assert not isinstance(err.value, D.PeerError), "rank 0 raises its own error"
    with pytest.raises(ValueError, match="process 1 of 2: disk full") as err:
        _agree_as(monkeypatch, 0, ["disk full"], lambda: 7)
    assert not isinstance(err.value, D.PeerError), "rank 0 reports another rank's error"
    with pytest.raises(D.PeerError, match="process 0 of 2"):
        _agree_as(monkeypatch, 1, ["disk full"], lambda: 7)
    with pytest.raises(D.PeerError, match="bad data"):
        _agree_as(monkeypatch, 1, [None], boom)


def test_new_train_keys_are_checked():
    scaled = ["train.batch_size=1024", "train.lr=5e-4", "train.lr_base_batch=512"]
    cfg = resolve_config(None, scaled)
    assert cfg.train.peak_lr() == pytest.approx(1e-3)
    assert resolve_config(None, []).train.peak_lr() == resolve_config(None, []).train.lr
    for bad, match in [
        ("train.grad_accum=0", "train.grad_accum must be >= 1"),
        ("train.lr_base_batch=0", "train.lr_base_batch must be >= 1"),
        ("data.workers=-1", "data.workers must be >= 0"),
        ("data.prefetch=0", "data.prefetch must be >= 1"),
        ("train.compile=maybe", "compile"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_config(None, [bad])


# -- slow and GPU paths (skipped on the CPU CI) -----------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RAVIT_SLOW_TESTS"),
    reason="torch.compile takes minutes on a 2-core CPU; set RAVIT_SLOW_TESTS=1",
)
def test_compiled_training_matches_eager(one_process, tmp_path):
    fit(tmp_path / "compiled", resolve_config(None, SMALL + ["train.compile=true"]))
    assert max_difference(weights(tmp_path / "compiled"), weights(one_process)) < TOLERANCE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_bf16_autocast_and_accumulation(tmp_path):
    gpu = ["train.device=cuda", "train.amp=bf16", "train.grad_accum=2", "data.workers=2"]
    records = fit(tmp_path / "gpu", resolve_config(None, SMALL + gpu))
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)
    state = weights(tmp_path / "gpu")
    assert all(w.dtype == torch.float32 and w.device.type == "cpu" for w in state.values())


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_nccl_processes_end_with_the_weights_of_one_gpu(tmp_path):
    gpu = SMALL + ["train.device=cuda", "train.amp=off"]
    fit(tmp_path / "one", resolve_config(None, gpu))
    proc = torchrun(["train", "--out", str(tmp_path / "two"), "--no-progress", *gpu])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert max_difference(weights(tmp_path / "two"), weights(tmp_path / "one")) < 1e-3
