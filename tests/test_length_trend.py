"""The benign trend over window length comes out; what sets attacks apart stays."""

from __future__ import annotations

import numpy as np

from alknet_firewall.length_trend import fit_length_trend, remove_length_trend


def test_a_length_trend_is_removed_and_an_attack_offset_kept() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 129, size=4000).astype(np.float32)[:, None]
    slope = np.array([2.0, -1.0, 0.0], dtype=np.float32)
    benign = np.log(tokens) * slope + rng.normal(0, 0.1, size=(4000, 3)).astype(np.float32)
    trend = fit_length_trend(benign, tokens)
    np.testing.assert_allclose(trend[1], slope, atol=0.02)
    left = remove_length_trend(benign, trend, tokens)
    for column in range(3):
        assert abs(np.corrcoef(left[:, column], np.log(tokens[:, 0]))[0, 1]) < 0.05
    # a short and a long attack, both 1.5 off the benign trend on the first dimension
    attack_tokens = np.array([[2.0], [128.0]], dtype=np.float32)
    attacks = np.log(attack_tokens) * slope + np.array([1.5, 0.0, 0.0], dtype=np.float32)
    shifted = remove_length_trend(attacks, trend, attack_tokens)
    np.testing.assert_allclose(shifted[:, 0], [1.5, 1.5], atol=0.05)
