"""Optimizer, schedules and the reduce-on-plateau multiplier, against closed forms."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from recjax.errors import ConfigError
from recjax.train.defaults import train_config
from recjax.train.state import lr_factor, make_optimizer, make_schedule, scale_lr


def test_first_adam_step_is_lr_times_sign_and_plateau_scales_it():
  cfg = train_config(lr=1e-2)
  tx = make_optimizer(cfg)
  params = {"w": jnp.array([1.0, -2.0, 3.0])}
  grads = {"w": jnp.array([0.5, -4.0, 0.0])}
  st = tx.init(params)
  upd, _ = tx.update(grads, st, params)
  # Adam's first step: -lr * g / (|g| + eps) = -lr * sign(g) (0 where g == 0).
  np.testing.assert_allclose(upd["w"], [-1e-2, 1e-2, 0.0], rtol=1e-5, atol=1e-9)
  assert lr_factor(st) == 1.0
  st = scale_lr(scale_lr(st, 0.1), 0.5)
  assert lr_factor(st) == pytest.approx(0.05)
  upd, _ = tx.update(grads, st, params)
  np.testing.assert_allclose(upd["w"], [-5e-4, 5e-4, 0.0], rtol=1e-5, atol=1e-9)


def test_schedules_closed_forms():
  cos = make_schedule(train_config(lr=2.0, schedule="cosine", max_steps=100))
  assert float(cos(0)) == pytest.approx(2.0)
  assert float(cos(50)) == pytest.approx(1.0, abs=1e-6)   # 2 · (1 + cos(π/2)) / 2
  exp = make_schedule(train_config(lr=1.0, schedule="exponential", decay_steps=10, decay_rate=0.5))
  assert float(exp(20)) == pytest.approx(0.25)
  with pytest.raises(ConfigError, match="schedule"):
    make_schedule(train_config(schedule="bogus"))
  with pytest.raises(ConfigError, match="lr"):
    make_schedule(train_config(lr=0.0))
