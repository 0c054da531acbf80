"""Bootstrap standard errors over windows."""

import pytest
import torch

from saekit.metrics import fvu
from saekit.metrics.uncertainty import bootstrap_se, fvu_with_se


def test_bootstrap_se_of_a_mean_matches_the_textbook_formula():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(400, generator=g, dtype=torch.float64) * 3 + 1
    sums = torch.stack([values, torch.ones_like(values)], 1)  # one token per window
    se = bootstrap_se(lambda t: t[..., :1] / t[..., 1:], sums, n_boot=2000)
    textbook = values.std() / len(values) ** 0.5
    assert float(se[0]) == pytest.approx(float(textbook), rel=0.1)


def test_bootstrap_se_shrinks_with_more_windows_and_is_nan_for_one():
    g = torch.Generator().manual_seed(1)
    ratio = lambda t: t[..., :1] / t[..., 1:]  # noqa: E731
    small = bootstrap_se(ratio, torch.rand(50, 2, generator=g, dtype=torch.float64) + 0.5)
    large = bootstrap_se(ratio, torch.rand(800, 2, generator=g, dtype=torch.float64) + 0.5)
    assert float(large[0]) < float(small[0]) / 2.5  # ~ 1/sqrt(16) = 1/4
    assert torch.isnan(bootstrap_se(ratio, torch.ones(1, 2))).all()


def test_fvu_with_se_agrees_with_fvu_and_counts_windows_not_tokens():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, 8, generator=g)
    x_hat = x + 0.5 * torch.randn(4000, 8, generator=g)
    per_token = torch.arange(4000)
    value, se_tokens = fvu_with_se(x, x_hat, per_token)
    assert value == pytest.approx(float(fvu(x, x_hat)), rel=1e-6)
    # The same rows grouped in 40 windows whose errors are shared within a window: a
    # per-window scale makes tokens of a window correlated, and the SE must see it.
    window = per_token // 100
    scale = 1 + torch.rand(40, generator=g)[window, None]
    _, se_windows = fvu_with_se(x, x + (x_hat - x) * scale, window)
    assert se_windows > 3 * se_tokens
    with pytest.raises(ValueError, match="window"):
        fvu_with_se(x, x_hat, window[:10])
