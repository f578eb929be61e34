import pytest

from ravit.config import build_model_config, parse_override, resolve_config
from ravit.training.schedule import lr_at


def test_layering_defaults_yaml_overrides(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: {preset: cifar10, layers: 1-3}\ntrain: {epochs: 7, lr: 0.002}\n")
    cfg = resolve_config(cfg_file, ["train.lr=5e-4", "model.num_heads=8"])
    assert cfg.train.epochs == 7  # from the file
    assert cfg.train.lr == 5e-4  # override beats file
    assert cfg.model.num_heads == 8
    assert cfg.train.batch_size == 256  # default


def test_flags_sit_between_file_and_overrides(tmp_path):
    cfg = resolve_config(None, ["train.epochs=3"], flags={"train": {"epochs": 2, "lr": 0.01}})
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.01)


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.learning_rate=1", "unknown key train.learning_rate"),
        ("optim.lr=1", "unknown section 'optim'"),
        ("lr=1", "expected section.key=value"),
        ("train.epochs=0", "train.epochs must be >= 1"),
        ("train.amp=fp8", "train.amp must be one of"),
    ],
)
def test_bad_overrides_are_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        resolve_config(None, [override])


def test_unknown_key_in_yaml_is_rejected(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {epochs: 2, warmup: 3}\n")
    with pytest.raises(ValueError, match="unknown key train.warmup"):
        resolve_config(f)


def test_override_values_are_yaml_typed():
    assert parse_override("model.resolutions=[16, 32]") == ("model", "resolutions", [16, 32])
    assert parse_override("train.betas=[0.9, 0.95]")[2] == [0.9, 0.95]


def test_model_from_run_config_takes_classes_and_channels_from_data():
    cfg = resolve_config(None, ["model.preset=cifar10", "model.layers=4"])
    model_cfg = build_model_config(cfg.model, num_classes=7, in_chans=1)
    assert (model_cfg.num_classes, model_cfg.in_chans, model_cfg.layers) == (7, 1, "4")
    bad = resolve_config(None, ["model.num_classes=5"])
    with pytest.raises(ValueError, match="num_classes is 5 but the data has 7"):
        build_model_config(bad.model, num_classes=7, in_chans=3)


def test_warmup_then_cosine():
    kw = dict(total_steps=100, warmup_steps=10, lr=1.0, min_lr=0.0)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(55, **kw) == pytest.approx(0.5)
    assert lr_at(100, **kw) == pytest.approx(0.0)


def test_on_off_yes_no_stay_strings_as_in_yaml_1_2(tmp_path):
    assert parse_override("train.amp=off")[2] == "off"
    assert parse_override("train.compile=true")[2] is True
    f = tmp_path / "run.yaml"
    f.write_text("train: {amp: off, compile: false}\n")
    cfg = resolve_config(f)
    assert (cfg.train.amp, cfg.train.compile) == ("off", False)
    with pytest.raises(ValueError, match="compile='yes' is not a valid bool"):
        resolve_config(None, ["train.compile=yes"])
