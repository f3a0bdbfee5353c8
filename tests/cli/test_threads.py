"""``--threads N`` on relax, evaluate relax and train: parsed, checked, applied to torch."""

import pytest
import torch

from force2geo.cli import common
from force2geo.cli.main import build_parser
from force2geo.errors import InputError

COMMANDS = {
    "relax": ["relax", "in.smi", "-o", "out.xyz"],
    "evaluate": ["evaluate", "relax", "--data", "store", "-o", "report"],
    "train": ["train", "--data", "store", "-o", "run"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_threads(command):
    parser = build_parser()
    assert parser.parse_args(COMMANDS[command]).threads is None  # torch's default kept
    assert parser.parse_args([*COMMANDS[command], "--threads", "3"]).threads == 3


def test_threads_is_no_training_option():
    """A runtime setting: it must not reach TrainConfig (nor a resume signature)."""
    from force2geo.cli.train import _options

    args = build_parser().parse_args([*COMMANDS["train"], "--threads", "1"])
    assert "threads" not in _options(args)


def test_set_threads_applies_and_checks():
    before = torch.get_num_threads()
    try:
        common.set_threads(None)
        assert torch.get_num_threads() == before
        common.set_threads(2)
        assert torch.get_num_threads() == 2
        with pytest.raises(InputError, match="at least 1"):
            common.set_threads(0)
    finally:
        torch.set_num_threads(before)
