"""The built-in pipeline's previews: the clean image predicted at a step, by the scheduler's own numbers."""

from __future__ import annotations

import torch

from limner.builtin.pipeline import predicted_clean, preview_due
from limner.builtin.train import inference_scheduler


def test_predicted_clean_inverts_the_forward_process_for_v_prediction() -> None:
    scheduler = inference_scheduler()
    torch.manual_seed(0)
    clean, noise = torch.rand(2, 12, 16, 16) * 2 - 1, torch.randn(2, 12, 16, 16)
    t = torch.tensor(600)
    alpha_bar = scheduler.alphas_cumprod[600]
    alpha, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    noisy = alpha * clean + sigma * noise
    velocity = alpha * noise - sigma * clean  # what a perfect v-prediction model outputs
    recovered = predicted_clean(scheduler, noisy, velocity, t)
    assert recovered is not None
    torch.testing.assert_close(recovered, clean, atol=1e-5, rtol=1e-5)


def test_epsilon_prediction_and_unknown_schedulers() -> None:
    scheduler = inference_scheduler()
    scheduler.register_to_config(prediction_type="epsilon")
    clean, noise = torch.zeros(1, 3, 4, 4) + 0.5, torch.randn(1, 3, 4, 4)
    alpha_bar = scheduler.alphas_cumprod[200]
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    recovered = predicted_clean(scheduler, noisy, noise, torch.tensor(200))
    assert recovered is not None
    torch.testing.assert_close(recovered, clean, atol=1e-4, rtol=1e-4)
    assert predicted_clean(object(), noisy, noise, torch.tensor(200)) is None  # type: ignore[arg-type]


def test_previews_are_due_every_n_steps_but_not_after_the_last() -> None:
    assert [step for step in range(1, 21) if preview_due(step, 5, 20)] == [5, 10, 15]
    assert not any(preview_due(step, 0, 20) for step in range(1, 21))
