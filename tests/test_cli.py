import pytest

from resattn import get_model_list
from resattn.cli import main


def test_list_shows_every_model_with_paper_counts(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in get_model_list():
        assert name in out
    line = next(l for l in out.splitlines() if l.startswith("attention56 "))
    assert "31.81" in line and "31.9" in line and "6.271" in line and "6.2" in line


def test_info_layer_table(capsys):
    assert main(["info", "attention56_cifar", "--input-size", "40x24", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert "features.1" in out and "output" in out
    assert "at input 3x40x24" in out


@pytest.mark.parametrize("argv,fragment", [
    (["info", "attention57"], "unknown model 'attention57'"),
    (["info", "attention56", "--input-size", "0"], "input size"),
    (["info", "attention56", "--depth", "0"], "--depth must be >= 1"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
