import json

import pytest

from ravit.cli import main


def test_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("cifar10", "tiny-imagenet", "imagenet"):
        assert name in out
    assert main(["presets", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cifar10"]["resolutions"] == [16, 32]


def test_flops_paper_table(capsys):
    assert main(["flops", "--paper"]) == 0
    out = capsys.readouterr().out
    assert out.count(" yes") == 13 and " NO" not in out


def test_flops_human_form(capsys):
    assert main(["flops", "--preset", "cifar10", "--layers", "1-3"]) == 0
    out = capsys.readouterr().out
    assert "6.83 M" in out and "89.99 M" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["flops", "--preset", "nope", "--layers", "1-3"], "unknown preset 'nope'"),
        (["flops", "--preset", "cifar10", "--layers", "1x3"], "malformed layer string"),
        (["flops", "--preset", "cifar10", "--layers", "1-3", "--resolutions", "10,32"],
         "not a positive multiple of the patch size"),
        (["flops", "--preset", "cifar10", "--layers", "0-0"], "at least one branch needs a layer"),
        (["flops", "--preset", "cifar10", "--resolutions", "a,b"], "expected integers"),
        (["flops"], "give --preset"),
        (["frobnicate"], "invalid choice"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(argv, match, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ravit: error:")
    assert match in lines[0]
    assert captured.out == ""
