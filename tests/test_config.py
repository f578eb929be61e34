import pytest

from ravit.config import PRESETS, BranchConfig, ModelConfig, model_config, parse_layers


def test_parse_layers():
    assert parse_layers("1-3") == (1, 3)
    assert parse_layers("2-0-3") == (2, 0, 3)
    assert parse_layers("0-0-12") == (0, 0, 12)


@pytest.mark.parametrize("bad", ["", "1-", "a-3", "1--3", "1.5-3", "-1-3", "1,3"])
def test_malformed_layers(bad):
    with pytest.raises(ValueError, match="malformed layer string"):
        parse_layers(bad)


def test_no_branch_with_layers():
    with pytest.raises(ValueError, match="at least one branch needs a layer"):
        model_config("cifar10", "0-0")


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'cifar11'"):
        model_config("cifar11", "1-3")


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_its_default_layers(name):
    cfg = model_config(name)
    assert [b.resolution for b in cfg.branches] == list(PRESETS[name].resolutions)
    assert cfg.embed_dim % cfg.num_heads == 0


def test_paper_resolutions_and_halving_default():
    assert [b.resolution for b in model_config("imagenet", "1-1-8").branches] == [64, 128, 224]
    assert [b.resolution for b in model_config("cifar10", "0-4").branches] == [16, 32]
    assert [b.resolution for b in model_config("cifar10", "1-1-1").branches] == [8, 16, 32]
    assert [b.resolution for b in model_config("cifar10", "4").branches] == [32]
    assert [b.resolution for b in model_config("imagenet", "1-8").branches] == [112, 224]


def test_overrides():
    cfg = model_config(
        "cifar10", "1-1-3", resolutions=(16, 24, 32), num_heads=8, mlp_dim=256, num_classes=100
    )
    assert [b.resolution for b in cfg.branches] == [16, 24, 32]
    assert (cfg.num_heads, cfg.mlp_dim, cfg.num_classes) == (8, 256, 100)
    assert model_config("cifar10", "1-3", embed_dim=64).mlp_dim == 256  # 4D by default


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(resolutions=(15, 32)), "not a positive multiple of the patch size 4"),
        (dict(resolutions=(32, 16)), "must strictly increase"),
        (dict(resolutions=(32, 32)), "must strictly increase"),
        (dict(resolutions=(16, 24, 32)), "3 resolutions .* for 2 branches"),
        (dict(num_heads=5), "not divisible by num_heads 5"),
        (dict(num_classes=1), "num_classes must be at least 2"),
        (dict(embed_dim=0), "embed_dim must be a positive integer"),
        (dict(colour="red"), "unknown model settings"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        model_config("cifar10", "1-3", **kwargs)


def test_config_round_trips_through_dict():
    cfg = model_config("tiny-imagenet", "2-0-3")
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.branches[1] == BranchConfig(32, 0)
    assert cfg.present == (0, 2) and cfg.num_exits == 2


def test_from_dict_rejects_unknown_keys():
    data = model_config("tiny").to_dict() | {"depth": 3}
    with pytest.raises(ValueError, match="unknown model config keys \\['depth'\\]"):
        ModelConfig.from_dict(data)


def test_every_model_setting_is_declared_once_and_read_off_everywhere():
    import dataclasses

    from ravit.cli import build_parser
    from ravit.cli.common import MODEL_FLAGS
    from ravit.config import ModelSection, model_settings, section_settings

    settings = {s.name: s for s in model_settings()}
    # The run config's model section: exactly the declared keys, in order.
    assert [f.name for f in dataclasses.fields(ModelSection)] == [
        s.name for s in section_settings()
    ]
    # Every preset gives every preset setting, and nothing else.
    wanted = {n for n, s in settings.items() if s.preset}
    assert all(set(p.settings) == wanted for p in PRESETS.values())
    # Every flagged setting is a flag of `ravit train` and `ravit flops`, writing its name.
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for command in ("train", "flops", "distill"):
        dests = {a.dest: a.option_strings for a in sub.choices[command]._actions}
        assert all(dests.get(s.name) == [s.flag] for s in MODEL_FLAGS), command
    assert {"embed_dim", "num_heads", "mlp_dim", "num_classes"} <= {s.name for s in MODEL_FLAGS}
    # ... and the flags build the same model as the keyword arguments.
    from ravit.cli.common import model_config_from_args

    args = build_parser().parse_args(["flops", "--preset", "cifar10", "--layers", "1-3",
                                      "--embed-dim", "64", "--heads", "2"])  # fmt: skip
    assert model_config_from_args(args) == model_config("cifar10", "1-3", embed_dim=64, num_heads=2)
