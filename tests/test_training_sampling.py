"""Which objects the adapter trainer practises on: classes the model still gets wrong are drawn more often."""

import numpy as np
import torch

from lib.trainers.click_steps import ClassDifficulty
from lib.training.crops import sample_crop_pair


def test_difficulty_weights_follow_the_running_dice():
    difficulty = ClassDifficulty(momentum=0.5, floor=0.1)
    for _ in range(10):
        difficulty.update("white_matter", 0.95)
        difficulty.update("ventricles", 0.05)
    weights = difficulty.weights()
    assert weights["white_matter"] == 0.1 and weights["ventricles"] > 0.9


def test_weighted_crops_draw_the_hard_class_more_often():
    image = torch.zeros(1, 40, 40, 40)
    easy, hard = torch.zeros(40, 40, 40, dtype=torch.bool), torch.zeros(40, 40, 40, dtype=torch.bool)
    easy[5:20, 5:20, 5:20] = True
    hard[25:35, 25:35, 25:35] = True
    rng = np.random.default_rng(0)
    drawn = [sample_crop_pair(image, {"easy": easy, "hard": hard}, 32, rng, {"easy": 0.1, "hard": 0.9})[2]
             for _ in range(200)]
    assert 0.8 < drawn.count("hard") / len(drawn) < 0.97
    uniform = [sample_crop_pair(image, {"easy": easy, "hard": hard}, 32, rng)[2] for _ in range(200)]
    assert 0.35 < uniform.count("hard") / len(uniform) < 0.65
