"""EMA of weights: the warm-up keeps a short run's average away from the initial weights."""

import torch
from torch import nn

from force2geo.training.ema import EMA


def test_warm_up_then_nominal_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update()
        d = min(0.999, (1 + n) / (10 + n))  # 0.1, 2/11, 3/12
        expected = d * expected + (1 - d) * value
        assert torch.allclose(ema.model.weight, torch.tensor([[expected]]))
    assert expected > 2.5  # not stuck near the initial 0.0, as a plain 0.999 EMA would be
    ema.n_updates = 10**6
    assert ema.current_decay == 0.999


def test_state_round_trip_keeps_the_update_count():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.99)
    for _ in range(3):
        ema.update()
    other = EMA(nn.Linear(2, 1), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert (other.decay, other.n_updates) == (0.99, 3)
    assert torch.equal(other.model.weight, ema.model.weight)
