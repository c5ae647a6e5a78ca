"""Features extractors for pixel teachers, registered by name for ``policy_kwargs`` in yaml.

``hyperparams/ppo.yml`` names an extractor as ``features_extractor_class: SmallCNN``;
:func:`resolve_policy_kwargs` turns the name into the class SB3 expects.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from diffses.errors import UserError


class SmallCNN(BaseFeaturesExtractor):
    """The DQN-2013-sized CNN: 16 8x8/4, 32 4x4/2, one dense layer; ~4x cheaper than NatureCNN.

    Input (B, C, H, W) scaled to [0, 1] by SB3; output (B, features_dim). The frames go
    through the convolutions channels-last: the same numbers, but on a CPU the weight
    gradient of the 8x8/4 layer takes about half the time it takes on NCHW tensors.
    """

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256):
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=8, stride=4), nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=4, stride=2), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        frames = observations.contiguous(memory_format=torch.channels_last)
        return self.linear(self.cnn(frames))  # (B, features_dim)


#: Extractors that ``features_extractor_class`` may name in a hyperparameters file.
EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"SmallCNN": SmallCNN,
                                                      "NatureCNN": NatureCNN}


def resolve_policy_kwargs(kwargs: Any) -> dict[str, Any]:
    """``policy_kwargs`` from yaml with the extractor's name replaced by its class."""
    if not isinstance(kwargs, dict):
        raise UserError(f"policy_kwargs must be a mapping, not {kwargs!r}")
    out = dict(kwargs)
    name = out.get("features_extractor_class")
    if isinstance(name, str):
        if name not in EXTRACTORS:
            raise UserError(f"unknown features_extractor_class '{name}': known are "
                            f"{', '.join(EXTRACTORS)}")
        out["features_extractor_class"] = EXTRACTORS[name]
    return out
