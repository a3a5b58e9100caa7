"""A small CNN for small grayscale images (the embedded default: 8x8 digits)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks (the transferable features) and an MLP head.

    Input (N, in_channels, H, W) float32, normalised; output (N, num_classes) logits.
    ``features`` ends in adaptive average pooling, so any H, W >= 4 works.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels (1 for digits).
        hidden: hidden units of the head (a tier-2 hyperparameter).
        width: channels of the first conv block (the second has twice as many).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, hidden: int = 64, width: int = 16) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.width = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = make_head(8 * width, hidden, num_classes)

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_head(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """A new softmax head: Linear(in, hidden) -> ReLU -> Linear(hidden, classes) (logits)."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
