"""Early exit on ONNX Runtime: an exported RAViT (`ravit export`) without torch.

Needs NumPy, Pillow and onnxruntime only (`pip install ravit[export]`, or
those three beside a copy of the package): importing this module imports
no torch (tests/test_export.py checks it with torch blocked).

The semantics are those of `RAViT.early_exit`, shared through
`ravit.exits.rule`: exits run coarse to fine, exit i's graph gets the image
resized to its resolution and the CLS token of exit i - 1 (the learned one
for exit 1), and an image leaves at the first exit whose policy score is
below its threshold; the last exit answers for the rest. After each exit
the batch is compacted, so later graphs run only on the images still in
it. Thresholds can follow a `BudgetController` on the export's control
table (`OnnxRAViT.controller`), as with the PyTorch runtime.

The resize is torch's antialiased bilinear one (`F.interpolate(...,
antialias=True, align_corners=False)`, `ravit.models.ravit.resize`) written
as two matrix products with the same float32 weights; it differs from
torch's by float32 rounding (at most about 1e-6 on normalised images,
measured in the tests), far below what could move an exit decision.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ravit.errors import describe_error
from ravit.exits.budget import BudgetController, ControlTable
from ravit.exits.rule import (
    EXIT_SCORES_NP,
    check_policy,
    entropy_np,
    leaves,
    normalize_thresholds,
)
from ravit.runtime.images import collect_image_paths
from ravit.runtime.manifest import exit_graphs, read_manifest, saved_thresholds
from ravit.runtime.records import PredictError, Prediction, answer_files, check_batch_size


@dataclass
class OnnxEarlyExitOutput:
    """Per image, in input order (the fields of `EarlyExitOutput`, as NumPy arrays)."""

    prediction: np.ndarray  # (B,) int64 class index
    exit_index: np.ndarray  # (B,) int64, 0 .. num_exits - 1
    entropy: np.ndarray  # (B,) float32 softmax entropy (nats) at the exit taken
    score: np.ndarray  # (B,) float32 the policy's score at the exit taken
    logits: np.ndarray  # (B, num_classes) float32 the answering exit's logits

    @property
    def probability(self) -> np.ndarray:
        """(B,) softmax probability of the predicted class."""
        z = self.logits - self.logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return np.take_along_axis(e / e.sum(-1, keepdims=True), self.prediction[:, None], 1)[:, 0]


def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) float32 weights of torch's antialiased bilinear resize along one axis.

    The triangle filter widened by the scale when shrinking, each row
    normalised to sum 1, computed in the precisions of torch's CPU kernel
    (aten UpSampleKernel.cpp, `_compute_indices_min_size_weights_aa`).
    """
    f32, f64 = np.float32, np.float64
    scale = f32(in_size) / f32(out_size)
    support = scale if scale >= 1 else f32(1.0)
    invscale = f32(1.0 / f64(scale)) if scale >= 1 else f32(1.0)
    weights = np.zeros((out_size, in_size), dtype=f32)
    for i in range(out_size):
        center = f32(f64(scale) * (i + 0.5))
        lo = max(int(f64(center - support) + 0.5), 0)
        hi = min(int(f64(center + support) + 0.5), in_size)
        offset = np.arange(lo, hi, dtype=f32) - center  # (taps,)
        x = np.abs(((offset.astype(f64) + 0.5) * f64(invscale)).astype(f32))
        taps = np.where(x < 1, f32(1.0) - x, f32(0.0)).astype(f32)
        weights[i, lo:hi] = taps / np.add.accumulate(taps, dtype=f32)[-1]
    return weights


class OnnxRAViT:
    """An exported RAViT (a folder written by `ravit export`) on onnxruntime.

    threads sets onnxruntime's intra-op threads (None: its default, one per
    physical core); providers its execution providers (None: the CPU).
    Images given to `forward` / `early_exit` are float32 (B, C, S, S),
    normalised as the model expects (`preprocess` does it for uint8 images).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
    ):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        m = self.manifest["model"]
        self.image_size, self.in_chans = int(m["image_size"]), int(m["in_chans"])
        self.classes = [str(c) for c in self.manifest["classes"]]
        self.exits = exit_graphs(self.manifest)
        options = ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
                raise ValueError(f"threads must be a positive integer, got {threads!r}")
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph at a time: no parallel branches to run
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        self._sessions = [self._session(ort, e.graph, options, providers) for e in self.exits]
        self._resize = [self._resize_pair(e.resolution) for e in self.exits]
        self._cls = np.asarray(self.manifest["initial_cls"], dtype=np.float32)[None]  # (1, D)
        pre = self.manifest["preprocess"]
        self._mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
        self._std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)

    def _session(self, ort, graph: str, options, providers: list[str]):
        path = self.folder / graph
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a bad file
            raise ValueError(f"{path}: not a loadable ONNX graph ({describe_error(err)})") from None

    def _resize_pair(self, size: int) -> tuple[np.ndarray, np.ndarray] | None:
        if size == self.image_size:
            return None
        w = resize_weights(self.image_size, size)  # (size, S)
        return w, np.ascontiguousarray(w.T)

    # -- what the manifest says -------------------------------------------
    @property
    def num_exits(self) -> int:
        return len(self.exits)

    @property
    def resolutions(self) -> list[int]:
        return [e.resolution for e in self.exits]

    @property
    def exit_flops(self) -> list[int]:
        """Cumulative analytic FLOPs of each exit (the cost of leaving there)."""
        return [e.cumulative_flops for e in self.exits]

    @property
    def saved_thresholds(self) -> tuple[tuple[float, ...], str] | None:
        """(thresholds, policy) calibrated for the run (`ravit calibrate`), or None."""
        return saved_thresholds(self.manifest)

    @property
    def control_table(self) -> ControlTable | None:
        table = self.manifest.get("control_table")
        return None if table is None else ControlTable.from_dict(table)

    def controller(self, target: float | None = None, **kwargs) -> BudgetController:
        """A `BudgetController` on the export's control table (arguments as its own)."""
        table = self.control_table
        if table is None:
            raise ValueError(
                f"{self.folder} has no control table (its run had no validation split)"
            )
        return BudgetController(table, target, **kwargs)

    # -- inference ----------------------------------------------------------
    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, C, S, S) -> float32, normalised as evaluation does (x / 255 - mean) / std."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"preprocess expects uint8 images, got {images.dtype}")
        self._check(images)
        return (images.astype(np.float32) / np.float32(255.0) - self._mean) / self._std

    def _check(self, x: np.ndarray) -> None:
        c, s = self.in_chans, self.image_size
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:] != (c, s, s):
            shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"expected an image batch of shape (B, {c}, {s}, {s}), got {shape}")

    def _images(self, x: np.ndarray) -> np.ndarray:
        """Normalised float images as float32, checked: uint8 ones need `preprocess` first."""
        if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.floating):
            kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise TypeError(f"expected normalised float images, got {kind}: use preprocess()")
        self._check(x)
        return x.astype(np.float32, copy=False)

    def resize(self, x: np.ndarray, e: int) -> np.ndarray:
        """Full-size images (B, C, S, S) -> exit e's resolution (B, C, r, r)."""
        pair = self._resize[e]
        if pair is None:
            return x
        rows, cols_t = pair
        return rows @ x @ cols_t  # (r, S) @ (B, C, S, S) @ (S, r) -> (B, C, r, r)

    def run_graph(
        self, e: int, image: np.ndarray, cls: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exit e's graph alone: images at its resolution, incoming CLS -> (logits, CLS)."""
        feed = {"image": np.ascontiguousarray(image), "cls": np.ascontiguousarray(cls)}
        logits, cls_out = self._sessions[e].run(None, feed)
        return logits, cls_out

    def run_exit(self, e: int, x: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exit e on full-size images x: the resize, then the graph."""
        return self.run_graph(e, self.resize(x, e), cls)

    def initial_cls(self, batch: int) -> np.ndarray:
        return np.repeat(self._cls, batch, axis=0)

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every exit's logits on float32 images (the full path, no early exit)."""
        x = self._images(x)
        cls = self.initial_cls(x.shape[0])
        logits = []
        for e in range(self.num_exits):
            out, cls = self.run_exit(e, x, cls)
            logits.append(out)
        return logits

    def early_exit(
        self,
        x: np.ndarray,
        thresholds: float | Sequence[float] | None = None,
        policy: str = "entropy",
    ) -> OnnxEarlyExitOutput:
        """`RAViT.early_exit` on onnxruntime: an image leaves exit i when score_i < tau_i."""
        x = self._images(x)
        taus = normalize_thresholds(thresholds, self.num_exits)
        score_fn = EXIT_SCORES_NP[check_policy(policy)]
        n, last = x.shape[0], self.num_exits - 1
        out = _Answers(n, len(self.classes))
        pos = np.arange(n)  # input positions of the images still running
        cls = self.initial_cls(n)
        for e in range(self.num_exits):
            logits, cls = self.run_exit(e, x, cls)
            ent = entropy_np(logits)
            score = ent if policy == "entropy" else score_fn(logits)
            if e == last:
                out.put(pos, e, logits, ent, score)
                break
            leave = leaves(score, taus[e])
            if not leave.any():
                continue
            if leave.all():  # everyone left: no later graph runs
                out.put(pos, e, logits, ent, score)
                break
            out.put(pos[leave], e, logits[leave], ent[leave], score[leave])
            stay = ~leave
            x, cls, pos = x[stay], cls[stay], pos[stay]
        return out.result()


class _Answers:
    """The per-image answers, filled exit by exit at the images' input positions."""

    def __init__(self, n: int, classes: int):
        self.exit_index = np.zeros(n, dtype=np.int64)
        self.entropy = np.zeros(n, dtype=np.float32)
        self.score = np.zeros(n, dtype=np.float32)
        self.logits = np.zeros((n, classes), dtype=np.float32)

    def put(self, pos, e: int, logits, ent, score) -> None:
        self.exit_index[pos], self.logits[pos] = e, logits
        self.entropy[pos], self.score[pos] = ent, score

    def result(self) -> OnnxEarlyExitOutput:
        prediction = self.logits.argmax(axis=-1).astype(np.int64)
        return OnnxEarlyExitOutput(
            prediction, self.exit_index, self.entropy, self.score, self.logits
        )


def predict_files(
    model: OnnxRAViT,
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    thresholds: float | Sequence[float] | None = None,
    policy: str = "entropy",
    batch_size: int = 64,
) -> Iterator[Prediction | PredictError]:
    """`ravit.runtime.predict` on onnxruntime: per file of `collect_image_paths(paths)`,
    a Prediction or a PredictError, with the same reading rules and records."""
    if not isinstance(model, OnnxRAViT):
        raise TypeError(f"predict_files expects an OnnxRAViT, got {type(model).__name__}")
    taus = normalize_thresholds(thresholds, model.num_exits)
    check_policy(policy)
    check_batch_size(batch_size)
    files = collect_image_paths(paths)

    def classify(images: np.ndarray) -> list[tuple[int, float, int, float]]:
        out = model.early_exit(model.preprocess(images), taus, policy)
        fields = (out.prediction, out.probability, out.exit_index, out.entropy)
        return list(zip(*(a.tolist() for a in fields)))

    shape = (model.in_chans, model.image_size)
    return answer_files(files, shape, classify, model.classes, model.exit_flops, batch_size)
