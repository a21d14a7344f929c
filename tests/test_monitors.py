"""The plateau and early-stopping semantics of protocol 3.3, checked against the published LR ladder."""

import torch

from bench.train.monitors import EarlyStopping, PlateauScheduler


def _optimizer(lr=1e-3):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_first_epoch_only_initialises_and_improvement_is_strict():
    plateau, opt = PlateauScheduler(patience=3), _optimizer()
    assert plateau.step(0.5, opt) is False and plateau.best == 0.5
    for _ in range(2):
        assert plateau.step(0.5, opt) is False  # equal is not an improvement
    assert plateau.wait == 2
    assert plateau.step(0.5, opt) is True  # third epoch without strict improvement cuts
    assert opt.param_groups[0]["lr"] == 1e-3 * 0.2
    assert plateau.wait == 0 and plateau.best == 0.5  # best kept after a cut


def test_lr_ladder_reaches_the_floor_and_then_stays():
    plateau, opt = PlateauScheduler(factor=0.2, patience=1, min_lr=1e-7), _optimizer()
    plateau.step(1.0, opt)
    ladder = []
    for _ in range(8):
        plateau.step(0.0, opt)
        ladder.append(opt.param_groups[0]["lr"])
    expected = [2e-4, 4e-5, 8e-6, 1.6e-6, 3.2e-7, 1e-7, 1e-7, 1e-7]
    assert all(abs(a - b) <= 1e-12 for a, b in zip(ladder, expected))
    assert plateau.wait >= 2  # at the floor nothing changes and the wait keeps growing


def test_early_stopping_fires_patience_epochs_after_last_improvement():
    early = EarlyStopping(patience=7)
    history = [0.1, 0.3, 0.3, 0.2] + [0.29] * 6
    outcomes = [early.step(v, epoch) for epoch, v in enumerate(history, start=1)]
    assert early.best_epoch == 2
    stops = [epoch for epoch, (_, stop) in enumerate(outcomes, start=1) if stop]
    assert stops[0] == 9  # best epoch 2 + 7: the engine stops there


def test_state_round_trip():
    plateau = PlateauScheduler()
    plateau.step(0.4, _optimizer())
    plateau.step(0.3, _optimizer())
    restored = PlateauScheduler()
    restored.load_state_dict(plateau.state_dict())
    assert restored == plateau
