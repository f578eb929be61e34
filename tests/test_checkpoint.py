import pytest
import torch

from ravit.config import model_config
from ravit.models import RAViT
from ravit.runs.checkpoint import load_model, save_checkpoint


def test_checkpoint_rebuilds_the_model_from_its_config_alone(tmp_path):
    cfg = model_config("tiny", "2-0-1", num_classes=7)
    model = RAViT(cfg).eval()
    save_checkpoint(tmp_path / "m.pt", model, epoch=3)
    again = load_model(tmp_path / "m.pt")
    assert again.cfg == cfg
    x = torch.randn(2, 3, 16, 16)
    for a, b in zip(model(x).logits, again(x).logits):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"], "no temporary file left behind"


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable RAViT checkpoint"):
        load_model(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a RAViT checkpoint"):
        load_model(tmp_path / "other.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    model = RAViT(model_config("tiny", "1-1"))
    save_checkpoint(tmp_path / "m.pt", model)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["model_config"] = model_config("tiny", "1-2").to_dict()
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="weights do not match the model config '1-2'"):
        load_model(tmp_path / "mixed.pt")
