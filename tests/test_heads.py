"""The exit heads: shapes, gradients, analytic MACs against torch's FLOP counter, config."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from ravit.cli import main
from ravit.config import EXIT_HEADS, ModelConfig, build_model_config, model_config, resolve_config
from ravit.cost import format_flops, measured_extra_flops, model_cost
from ravit.models import HEADS, RAViT
from ravit.models.heads import HeadSpec, build_head, head_macs

# Grids 2 and 4 (tiny), and an odd grid of 3 beside 8 (cifar10 at 12 / 32 px).
SHAPES = [("tiny", "1-1", None), ("cifar10", "1-1", (12, 32))]


def small(preset, layers, resolutions=None, **kw):
    return model_config(preset, layers, resolutions=resolutions, embed_dim=32, num_heads=2, **kw)


def images(cfg, n=2):
    return torch.randn(n, cfg.in_chans, cfg.image_size, cfg.image_size)


def test_the_registry_is_the_config_list():
    assert tuple(HEADS) == EXIT_HEADS


@pytest.mark.parametrize("head", EXIT_HEADS)
@pytest.mark.parametrize("preset, layers, res", SHAPES)
def test_shapes_and_a_training_step_reaches_every_parameter(head, preset, layers, res):
    cfg = small(preset, layers, res, exit_heads=head)
    model = RAViT(cfg).train()
    assert all(type(h) is HEADS[head] for h in model.heads)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    y = torch.randint(0, cfg.num_classes, (3,))
    x = images(cfg, 3)
    out = model(x).logits
    assert [tuple(lg.shape) for lg in out] == [(3, cfg.num_classes)] * 2
    loss = sum(torch.nn.functional.cross_entropy(lg, y) for lg in out)
    loss.backward()
    missing = [n for n, p in model.heads.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"{head} head parameters without a gradient: {missing}"
    before = [p.detach().clone() for p in model.heads.parameters()]
    opt.step()
    # A gradient at rounding level (the mixer's token-MLP output bias, which the next
    # LayerNorm cancels) moves a parameter by less than its ulp: only the others must move.
    moved = [not torch.equal(a, b) for a, b in zip(before, model.heads.parameters())]
    assert all(m for m, p in zip(moved, model.heads.parameters()) if p.grad.abs().max() > 1e-6)


@pytest.mark.parametrize("head", EXIT_HEADS)
@pytest.mark.parametrize("preset, layers, res", SHAPES + [("cifar10", "1-3", None)])
def test_analytic_macs_equal_the_flop_counter(head, preset, layers, res):
    """model_cost + what it neglects (patch embedding, linear heads) == counted FLOPs, exactly."""
    cfg = model_config(preset, layers, resolutions=res, exit_heads=head, fused_attention=False)
    model = RAViT(cfg).eval()
    with FlopCounterMode(display=False) as counter:
        model(images(cfg))
    assert counter.get_total_flops() / 2 == model_cost(cfg).total_flops + measured_extra_flops(cfg)
    for e, i in enumerate(cfg.present):  # each head alone, on its own tokens
        spec = HeadSpec.of(cfg, i)
        with FlopCounterMode(display=False) as counter:
            model.heads[e](torch.randn(1, spec.tokens, cfg.embed_dim))
        assert counter.get_total_flops() == 2 * head_macs(head, spec)


def test_cumulative_cost_counts_the_heads_run_before_each_exit():
    base = model_cost(model_config("cifar10", "1-1-2"))
    cfg = model_config("cifar10", "1-1-2", exit_heads="mlp,cnn-add,linear")
    cost = model_cost(cfg)
    h = [2 * head_macs(n, HeadSpec.of(cfg, i)) for i, n in enumerate(["mlp", "cnn-add"])]
    assert [e.head_flops for e in cost.exits] == [h[0], h[1], 0]
    b = base.cumulative_flops
    assert cost.cumulative_flops == [b[0] + h[0], b[1] + h[0] + h[1], b[2] + h[0] + h[1]]
    assert [e.branch_flops for e in cost.exits] == [e.branch_flops for e in base.exits]


def test_linear_heads_keep_the_paper_figures():
    cost = model_cost(model_config("cifar10", "1-3", exit_heads="linear"))
    assert format_flops(cost.total_flops) == "89.99 M"
    assert format_flops(cost.exits[0].cumulative_flops) == "6.83 M"
    assert all(e.head == "linear" and e.head_flops == 0 for e in cost.exits)


def test_heads_per_exit_skip_absent_branches():
    cfg = model_config("tiny-imagenet", "2-0-3", exit_heads="vit,mlp")
    assert [b.head for b in cfg.branches] == ["vit", "linear", "mlp"]
    assert cfg.exit_heads == ("vit", "mlp")
    assert model_config("cifar10", "1-1-1", exit_heads="mixer").exit_heads == ("mixer",) * 3


def test_config_round_trip_and_old_configs_load():
    cfg = model_config("cifar10", "1-3", exit_heads=["cnn-project", "resmlp"])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(data) == cfg
    for b in data["branches"]:  # a config written before heads were configurable
        del b["head"]
    old = ModelConfig.from_dict(data)
    assert old.exit_heads == ("linear", "linear") and old == model_config("cifar10", "1-3")


@pytest.mark.parametrize(
    "heads, match",
    [("mlp,sparkle", r"unknown exit head 'sparkle'; expected one of linear, mlp, resmlp"),
     ("mlp,mlp,mlp", r"3 names for 2 exits"),
     ([3], r"exit heads must be names")],
)  # fmt: skip
def test_bad_heads_are_clear_errors(heads, match):
    with pytest.raises((ValueError, TypeError), match=match):
        model_config("cifar10", "1-3", exit_heads=heads)
    with pytest.raises(ValueError, match="unknown exit head 'x'"):
        build_head("x", HeadSpec.of(model_config("tiny"), 0))


@pytest.mark.parametrize("value", ["mlp,linear", "[mlp, linear]"])
def test_run_config_takes_exit_heads(value):
    cfg = resolve_config(overrides=["model.preset=cifar10", f"model.exit_heads={value}"])
    assert cfg.model.exit_heads == ["mlp", "linear"]
    model = build_model_config(cfg.model, num_classes=10, in_chans=3)
    assert model.exit_heads == ("mlp", "linear")


def test_flops_cli_shows_the_head_costs(capsys):
    argv = ["flops", "--preset", "cifar10", "--layers", "1-3", "--exit-heads", "vit,linear"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vit" in out and "6.83 M      13.66 M" in out
    assert main(argv + ["--json"]) == 0
    exits = json.loads(capsys.readouterr().out)["exits"]
    assert [e["head"] for e in exits] == ["vit", "linear"]
    # the vit head is one more layer of the branch, plus a linear layer D x C
    assert exits[0]["cumulative_flops"] == 2 * exits[0]["branch_flops"] + 2 * 128 * 10
    assert main(["flops", "--preset", "cifar10", "--exit-heads", "nope"]) == 2
    assert "unknown exit head 'nope'" in capsys.readouterr().err


def test_train_with_heads_from_the_cli(tmp_path, capsys):
    run = str(tmp_path / "run")
    argv = ["train", "--preset", "digits", "--layers", "1-1", "--data", "digits", "--epochs", "1"]
    argv += ["--exit-heads", "cnn-ignore,mixer", "--out", run, "--no-progress"]
    argv += ["model.embed_dim=32", "model.num_heads=2", "data.train_size=256"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", run, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    cfg = model_config("digits", "1-1", embed_dim=32, num_heads=2, exit_heads="cnn-ignore,mixer")
    assert [e["cumulative_flops"] for e in res["exits"]] == model_cost(cfg).cumulative_flops
