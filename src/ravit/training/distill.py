"""Early-exit knowledge distillation: a student RAViT learns from a trained teacher, exit by exit.

For student exit i, paired with teacher exit m(i), on a batch of B images
with labels y, student logits s and teacher logits t (docs/distillation.md):

    L_i = CE(s, y)
        + alpha * T^2 / B * sum_{b: teacher right} KL(softmax(t_b / T) || softmax(s_b / T))
        + beta / B * sum_{b: teacher wrong} (log C - H(softmax(s_b)))

The KL term copies the teacher's softened answer where it is right; where it
is wrong, the last term pushes the student toward a uniform (high-entropy)
answer instead, so that the image does not leave early on a copied mistake.
The loop (ravit.training.loop.fit) adds the CE and applies the exit weights;
this module supplies the other two terms through fit's `extra_loss` hook.
The teacher runs in eval mode, without gradients, on the same augmented batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ravit.config import ModelConfig, RunConfig, build_model_config, resolve_config
from ravit.data import load_data
from ravit.models import RAViT
from ravit.runs import folder as runfs
from ravit.training.loop import fit


@dataclass(frozen=True)
class DistillConfig:
    """The distillation settings; defaults and why in docs/distillation.md."""

    temperature: float = 4.0  # T: softens both answers in the KL term
    alpha: float = 1.0  # weight of the T^2-scaled KL term (images the teacher gets right)
    beta: float = 0.5  # weight of the entropy term (images the teacher gets wrong)

    def __post_init__(self) -> None:
        for name in ("temperature", "alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"distill {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"distill {name} must be finite, got {value!r}")
        if self.temperature <= 0:
            raise ValueError(f"distill temperature must be > 0, got {self.temperature}")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(f"distill alpha and beta must be >= 0, got {self.alpha}, {self.beta}")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def kd_term(
    student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 / B * sum over kept images of KL(softmax(t / T) || softmax(s / T)).

    Divided by the whole batch B (not by the kept count), so that the term
    weighs in proportion to the share of images the teacher gets right.
    """
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (B,) KL(p_t || p_s) per image
    return temperature**2 * (kl * keep).sum() / student.shape[0]


def entropy_gap_term(student: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """1 / B * sum over kept images of (log C - H(softmax(s))): >= 0, zero at the uniform answer.

    Minimising it raises the student's entropy on those images (the exit
    policy's own score, at temperature 1).
    """
    log_p = F.log_softmax(student.float(), dim=-1)
    ent = -(log_p.exp() * log_p).sum(dim=-1)  # (B,)
    gap = math.log(student.shape[-1]) - ent
    return (gap * keep).sum() / student.shape[0]


def distill_terms(
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    target: torch.Tensor,
    cfg: DistillConfig,
) -> list[torch.Tensor]:
    """Per student exit: alpha * KL term on the teacher's right answers + beta * entropy term
    on its wrong ones. `teacher[i]` is the teacher exit paired with student exit i."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student exits but {len(teacher)} teacher exits paired")
    terms = []
    for s, t in zip(student, teacher):
        right = (t.argmax(dim=-1) == target).float()  # (B,)
        kd = kd_term(s, t, right, cfg.temperature)
        terms.append(cfg.alpha * kd + cfg.beta * entropy_gap_term(s, 1.0 - right))
    return terms


def exit_map(student: ModelConfig, teacher: ModelConfig) -> list[int]:
    """The teacher exit (0-based) that teaches each student exit.

    Same number of exits: exit i learns from exit i. Otherwise each student
    exit learns from the teacher exit at the same resolution, or from the
    teacher's last exit when none has it.
    """
    if student.num_exits == teacher.num_exits:
        return list(range(student.num_exits))
    t_res = [teacher.branches[i].resolution for i in teacher.present]
    s_res = [student.branches[i].resolution for i in student.present]
    return [t_res.index(r) if r in t_res else len(t_res) - 1 for r in s_res]


class TeacherLoss:
    """fit()'s extra_loss hook: runs the teacher on the batch and returns distill_terms."""

    def __init__(self, teacher: RAViT, mapping: Sequence[int], cfg: DistillConfig):
        self.teacher = teacher.eval()
        self.mapping = list(mapping)
        self.cfg = cfg

    def __call__(
        self, logits: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> list[torch.Tensor]:
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)
        with torch.no_grad():
            t_logits = self.teacher(x).logits
        paired = [t_logits[j] for j in self.mapping]
        return distill_terms(logits, paired, y, self.cfg)


# -- the run: a normal training run plus RUN/distill.json ------------------------------


def student_config(
    teacher_run: str | Path,
    yaml_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    flags: dict | None = None,
) -> RunConfig:
    """The student's run config: the teacher's (data, schedule, model) < YAML < flags < overrides.

    So a student differs from its teacher only where asked (e.g. --layers 1-1),
    and trains on the teacher's data with the teacher's validation split.
    """
    sections, _ = runfs.read_config(Path(teacher_run))
    return resolve_config(yaml_file, list(overrides), base=sections, flags=flags)


def load_teacher(teacher_run: str | Path) -> tuple[RAViT, dict]:
    """The teacher's model (eval mode, CPU) and its checkpoint state (epoch, data description)."""
    return runfs.load_run_model(teacher_run, "cpu")


def check_student(cfg: RunConfig, teacher: RAViT, teacher_data: dict) -> ModelConfig:
    """The student's ModelConfig, checked against the teacher: same data, classes and image."""
    classes, channels = teacher_data["classes"], teacher_data["channels"]
    if cfg.data.spec != teacher_data["spec"]:
        data = load_data(cfg.data.spec, "train")
        if list(data.classes) != list(classes) or data.channels != channels:
            raise ValueError(
                f"data {cfg.data.spec!r} ({len(data.classes)} classes, {data.channels} channels) "
                f"is not the teacher's data {teacher_data['spec']!r} ({len(classes)} classes, "
                f"{channels} channels): a student learns on the data its teacher knows"
            )
    student = build_model_config(cfg.model, num_classes=len(classes), in_chans=channels)
    t = teacher.cfg
    if (student.image_size, student.in_chans) != (t.image_size, t.in_chans):
        raise ValueError(
            f"the student sees {student.image_size} px x {student.in_chans} channel(s) but the "
            f"teacher {t.image_size} px x {t.in_chans}: both must read the same batch"
        )
    return student


def distill(
    out: str | Path,
    teacher_run: str | Path,
    cfg: RunConfig,
    dcfg: DistillConfig | None = None,
    *,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train a new student run into `out` from the teacher run `teacher_run`.

    Everything is checked before anything is written; the run folder is a
    normal training run (eval, calibrate, predict work on it) plus
    RUN/distill.json, which names the teacher and holds the settings.
    """
    dcfg = dcfg or DistillConfig()
    run = Path(out)
    runfs.check_new(run)
    teacher, state = load_teacher(teacher_run)
    student = check_student(cfg, teacher, state["data"])
    mapping = exit_map(student, teacher.cfg)
    record = {
        "teacher": str(Path(teacher_run).resolve()),
        "teacher_epoch": int(state["epoch"]),
        "teacher_model": teacher.cfg.to_dict(),
        "exit_map": mapping,
        **dcfg.to_dict(),
    }
    run.mkdir(parents=True, exist_ok=True)
    runfs.write_distill(run, record)
    hook = TeacherLoss(teacher, mapping, dcfg)
    return fit(run, cfg, progress=progress, on_epoch=on_epoch, extra_loss=hook)


def resume_distill(
    run: str | Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Continue a distillation run with the teacher and settings in RUN/distill.json."""
    saved = runfs.read_distill(run)
    teacher, state = load_teacher(saved["teacher"])
    same_model = teacher.cfg == ModelConfig.from_dict(saved["teacher_model"])
    if not same_model or state["epoch"] != saved["teacher_epoch"]:
        raise ValueError(
            f"the teacher {saved['teacher']} changed since {run} started: it is now "
            f"{teacher.cfg.layers!r} at epoch {state['epoch']}, was epoch "
            f"{saved['teacher_epoch']}; distill a new student instead"
        )
    dcfg = DistillConfig(**{k: saved[k] for k in ("temperature", "alpha", "beta")})
    hook = TeacherLoss(teacher, saved["exit_map"], dcfg)
    return fit(
        run,
        resume=True,
        overrides=list(overrides),
        progress=progress,
        on_epoch=on_epoch,
        extra_loss=hook,
    )
