"""The measures of bench/uncertainty.py and the power-noised order, on tiny synthetic inputs."""

import numpy as np
import pytest
import torch
from scipy import stats

from bench.uncertainty import auroc, categorical, spearman
from lib.activelearning.sampling import power_noised_order
from lib.scoring.uncertainty import binary_entropy, normalised_entropy, soft_dice_error, summarise
from lib.segmentation.head import SegmentationHead
from lib.segmentation.segresnet import build_network
from lib.transforms.preprocess import ModelVolume


def test_auroc_of_a_map_that_ranks_every_error_first_is_one_and_of_noise_about_a_half():
    errors = np.zeros(1000, bool)
    errors[:100] = True
    ranked = np.where(errors, 0.9, 0.1) + np.linspace(0, 0.05, 1000)
    assert auroc(ranked, errors) == 1.0
    assert auroc(-ranked, errors) == 0.0
    assert auroc(np.ones(1000), errors) == 0.5  # all tied
    rng = np.random.default_rng(0)
    assert abs(auroc(rng.random(20000), rng.random(20000) < 0.3) - 0.5) < 0.02
    assert auroc(ranked, np.zeros(1000, bool)) is None


def test_auroc_counts_ties_as_one_half_like_the_mann_whitney_statistic():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, 500).astype(np.float32)  # many ties
    positives = rng.random(500) < 0.2 + 0.15 * scores
    ranks = stats.rankdata(scores)
    n_pos = positives.sum()
    expected = (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (500 - n_pos))
    assert auroc(scores, positives) == pytest.approx(expected, abs=1e-12)


def test_spearman_of_a_monotone_relation_is_one_and_of_a_constant_undefined():
    x = np.arange(10.0)
    assert spearman(x, np.exp(x))["rho"] == 1.0
    assert spearman(x, -(x**3))["rho"] == -1.0
    assert spearman(x, np.ones(10)) == {"rho": None, "p": None}


def test_class_distribution_picks_what_the_automatic_result_picks():
    logits = [torch.tensor([-1.0, 2.0, 0.5, -3.0]), torch.tensor([-2.0, 1.0, 3.0, -0.5])]
    q = categorical(logits)
    assert torch.allclose(q.sum(0), torch.ones(4))
    assert torch.argmax(q, 0).tolist() == [0, 1, 2, 0]  # background unless a class logit is positive; highest wins


def test_soft_dice_error_is_zero_for_agreement_and_one_for_disjoint_masks():
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert soft_dice_error(mask, mask) == 0.0
    assert soft_dice_error(1 - mask, mask) == 1.0


def test_served_score_is_the_mean_entropy_where_a_class_is_plausible():
    p = torch.tensor([0.5, 0.5, 0.01, 0.9])
    result = summarise({"a": p, "b": torch.zeros(4)}, (4,))
    plausible = binary_entropy(p[[0, 1, 3]]).mean()
    assert result.per_class == {"a": round(float(plausible), 4), "b": 0.0}
    assert result.score == round((result.per_class["a"] + 0.0) / 2, 4)
    assert torch.allclose(result.voxels, binary_entropy(p))


def test_power_noised_order_draws_without_replacement_in_proportion_to_score_power():
    scores = [1.0, 2.0, 3.0, 4.0]
    rng = np.random.default_rng(0)
    orders = [power_noised_order(scores, 1.0, rng) for _ in range(20000)]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    first = np.bincount([order[0] for order in orders], minlength=4) / len(orders)
    assert np.allclose(first, [0.1, 0.2, 0.3, 0.4], atol=0.015)
    # second pick given the first: P(3 then 2) = 0.4 * 3 / 6
    assert np.mean([order[:2] == [3, 2] for order in orders]) == pytest.approx(0.2, abs=0.015)
    squared = np.bincount([power_noised_order(scores, 2.0, rng)[0] for _ in range(20000)], minlength=4) / 20000
    assert np.allclose(squared, np.square(scores) / 30.0, atol=0.015)


def test_power_noised_order_limits_zero_scores_and_validation():
    rng = np.random.default_rng(0)
    assert power_noised_order([0.2, 0.9, 0.5], beta=200.0, rng=rng) == [1, 2, 0]  # large beta: top-k
    assert all(power_noised_order([0.0, 1.0, 0.0, 2.0], 1.0, rng)[2:] in ([0, 2], [2, 0]) for _ in range(50))
    uniform = np.bincount([power_noised_order([1.0, 100.0], 0.0, rng)[0] for _ in range(4000)]) / 4000
    assert np.allclose(uniform, [0.5, 0.5], atol=0.03)
    for bad in ([-1.0, 1.0], [np.nan], [[1.0]]):
        with pytest.raises(ValueError):
            power_noised_order(bad)


def test_normalised_entropy_is_zero_for_a_sure_voxel_and_one_for_a_uniform_one():
    sure = torch.tensor([0.0, 1.0, 0.0, 0.0])
    uniform = torch.full((4,), 0.25)
    split = torch.tensor([0.5, 0.5, 0.0, 0.0])
    values = normalised_entropy(torch.stack([sure, uniform, split], dim=1))
    assert values.tolist() == pytest.approx([0.0, 1.0, 0.5], abs=1e-5)


def test_the_mirror_averaged_head_answers_a_mirrored_image_with_its_mirrored_answer():
    """Averaging over the image and its left-right mirror makes the head's probabilities mirror-equivariant (a single
    window, so the sliding windows cannot break the symmetry); one pass alone is not."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        network = build_network(3, 8)
    head = SegmentationHead(network, {"infer_window": 32, "version": 1})
    image = torch.randn(1, 32, 32, 32)

    def volume(voxels: torch.Tensor) -> ModelVolume:
        return ModelVolume(voxels, np.eye(4), np.eye(4), (32, 32, 32), "synthetic")

    mirrored = torch.flip(image, dims=[1])
    averaged = head.mirror_averaged(volume(image), head.probabilities(volume(image)))
    averaged_mirrored = head.mirror_averaged(volume(mirrored), head.probabilities(volume(mirrored)))
    assert torch.allclose(averaged_mirrored, torch.flip(averaged, dims=[1]), atol=1e-5)
    assert averaged.sum(0).sub(1).abs().max() < 1e-5
    single = head.probabilities(volume(image))
    assert not torch.allclose(head.probabilities(volume(mirrored)), torch.flip(single, dims=[1]), atol=1e-3)


def test_prior_correction_takes_the_class_weights_out_of_the_probabilities():
    """Weighted cross-entropy learns probabilities proportional to weight x the true ones: dividing by the weights and
    renormalising gives those back; a head published without weights keeps its probabilities."""
    true = torch.tensor([[0.6, 0.2], [0.3, 0.7], [0.1, 0.1]])  # (channels, voxels)
    weights = torch.tensor([1.0, 2.0, 10.0])
    learned = true * weights[:, None] / (true * weights[:, None]).sum(0)
    head = SegmentationHead(build_network(3, 8), {"class_weights": weights.tolist(), "version": 1})
    assert torch.allclose(head.prior_corrected(learned), true, atol=1e-6)
    assert head.prior_corrected(learned)[2].max() < learned[2].min()  # the up-weighted class is no longer inflated
    unweighted = SegmentationHead(head.network, {"version": 1})
    assert unweighted.prior_corrected(learned) is learned
