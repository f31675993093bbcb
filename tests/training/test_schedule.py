import math

import pytest
import torch
from torch import nn

from transformer.training import cooldown_factor, inverse_sqrt_lr, learning_rate, make_optimizer, set_learning_rate

STEPS = [1, 2, 3, 10, 99, 100, 101, 250, 4000, 10_000, 100_000]


def paper(step: int, warmup: int, d_model: int) -> float:
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@pytest.mark.parametrize("step", STEPS)
def test_paper_formula(step):
    assert inverse_sqrt_lr(step, warmup=4000, d_model=512) == pytest.approx(paper(step, 4000, 512), rel=1e-12)
    assert inverse_sqrt_lr(step, warmup=4000, d_model=512, scale=2.0) == pytest.approx(
        2 * paper(step, 4000, 512), rel=1e-12
    )


@pytest.mark.parametrize("step", STEPS)
def test_peak_lr_is_rescaled_paper_curve(step):
    warmup, peak = 100, 7e-4
    expected = peak * paper(step, warmup, 512) / paper(warmup, warmup, 512)
    assert inverse_sqrt_lr(step, warmup=warmup, peak_lr=peak) == pytest.approx(expected, rel=1e-12)
    assert inverse_sqrt_lr(step, warmup=warmup, peak_lr=peak) == pytest.approx(
        peak * min(step / warmup, math.sqrt(warmup / step)), rel=1e-12
    )


def test_maximum_at_warmup_and_step_zero_is_step_one():
    lrs = [inverse_sqrt_lr(s, warmup=50, d_model=64) for s in range(1, 500)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == 50
    assert inverse_sqrt_lr(50, warmup=50, peak_lr=1e-3) == pytest.approx(1e-3)
    assert inverse_sqrt_lr(0, warmup=50, d_model=64) == inverse_sqrt_lr(1, warmup=50, d_model=64) > 0


def test_learning_rate_written_before_each_update_is_the_formula():
    model = nn.Linear(3, 2)
    opt = make_optimizer(model, lr=123.0)
    for k in range(40):
        # k updates done: the coming update is number k + 1.
        set_learning_rate(opt, learning_rate(k + 1, k / 40, warmup=10, d_model=512))
        expected = paper(k + 1, 10, 512)
        assert all(group["lr"] == pytest.approx(expected, rel=1e-12) for group in opt.param_groups)
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        opt.zero_grad()


def test_learning_rate_with_peak_lr_reaches_peak_on_update_warmup():
    opt = make_optimizer([nn.Parameter(torch.zeros(2))], lr=1.0)
    seen = []
    for step in range(1, 13):
        set_learning_rate(opt, learning_rate(step, 0.0, warmup=5, peak_lr=3e-4))
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
    assert max(seen) == pytest.approx(3e-4) and seen.index(max(seen)) == 4  # update 5


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("budget_used", [0.0, 0.5, 0.7, 0.85, 0.99, 1.0, 1.2])
def test_learning_rate_is_the_paper_curve_times_the_linear_cooldown(step, budget_used):
    warmup, peak, cooldown = 100, 7e-4, 0.3
    decay = min(1.0, max(0.0, (1.0 - budget_used) / cooldown))  # 1 until 70% of the budget, then linear to 0
    expected = peak * min(step / warmup, math.sqrt(warmup / step)) * decay
    got = learning_rate(step, budget_used, warmup=warmup, peak_lr=peak, cooldown=cooldown)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-300)
    paper_lr = learning_rate(step, budget_used, warmup=4000, d_model=512)  # cooldown=0: the paper's curve alone
    assert paper_lr == pytest.approx(paper(step, 4000, 512), rel=1e-12)


def test_optimizer_settings():
    model = nn.Linear(3, 2)
    adam = make_optimizer(model.parameters(), lr=1e-3)
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["betas"] == (0.9, 0.98) and adam.defaults["eps"] == 1e-9
    adamw = make_optimizer(model, lr=1e-3, weight_decay=0.01)
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.01



@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_optimizer_makes_the_updates_of_torchs_default_one(weight_decay):
    torch.manual_seed(0)
    ours_params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(4))]
    ref_params = [nn.Parameter(p.detach().clone()) for p in ours_params]
    groups = [{"params": (p for p in ours_params)}]  # a group given as a generator is read once
    ours = make_optimizer(groups, lr=1e-2, weight_decay=weight_decay)
    assert ours.defaults["fused"] is True
    ref_type = torch.optim.AdamW if weight_decay else torch.optim.Adam
    ref = ref_type(ref_params, lr=1e-2, betas=(0.9, 0.98), eps=1e-9, weight_decay=weight_decay, foreach=False)
    for _ in range(20):  # the same gradients for both, so that rounding cannot compound through the loss
        for a, b in zip(ours_params, ref_params, strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ours.step()
        ref.step()
    for a, b in zip(ours_params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"warmup": 0, "d_model": 512}, "warmup=0"),
        ({"warmup": 10}, "exactly one of d_model=None"),
        ({"warmup": 10, "d_model": 512, "peak_lr": 1e-3}, "exactly one of d_model=512"),
        ({"warmup": 10, "peak_lr": -1.0}, "peak_lr=-1.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inverse_sqrt_lr(1, **kwargs)
    with pytest.raises(ValueError, match=message):
        learning_rate(1, 0.0, **kwargs)


def test_bad_step_and_lr():
    with pytest.raises(ValueError, match="step=-1"):
        inverse_sqrt_lr(-1, warmup=10, d_model=8)
    with pytest.raises(ValueError, match="lr=0"):
        make_optimizer([nn.Parameter(torch.zeros(1))], lr=0)


@pytest.mark.parametrize(("progress", "fraction", "expected"), [
    (0.0, 0.25, 1.0), (0.75, 0.25, 1.0), (0.8, 0.25, 0.8), (0.9, 0.25, 0.4), (1.0, 0.25, 0.0), (1.3, 0.25, 0.0),
    (0.0, 1.0, 1.0), (0.5, 1.0, 0.5), (0.99, 0.0, 1.0), (2.0, 0.0, 1.0),
])
def test_cooldown_is_linear_to_zero_over_the_last_fraction(progress, fraction, expected):
    assert cooldown_factor(progress, fraction) == pytest.approx(expected, rel=1e-12)


def test_cooldown_fraction_outside_zero_one_is_an_error():
    with pytest.raises(ValueError, match=r"fraction=1.5 must be in \[0, 1\]"):
        cooldown_factor(0.5, 1.5)
    with pytest.raises(ValueError, match=r"fraction=1.5 must be in \[0, 1\]"):
        learning_rate(10, 0.5, warmup=10, peak_lr=1e-3, cooldown=1.5)
