"""The networks of the end-to-end benchmark (``python -m bnorm bench
--model NAME``), written here so that the benchmark needs nothing beyond
PyTorch: ResNet-18 and ResNet-50 (He et al. 2016, the layout of the common
torchvision definitions: a 7x7 stride-2 stem, max pooling, four stages of
basic or bottleneck blocks, stride in the 3x3 convolution), MobileNetV2
(Sandler et al. 2018: inverted residuals with ReLU6 and linear bottlenecks,
width 1.0), a small DenseNet-BC (Huang et al. 2017: DenseNet-121's
layout, four dense blocks of 6, 12, 24 and 16 layers, with growth rate 12
and 24 initial features instead of 32 and 64), and ResNet-18 with LeakyReLU
in place of every ReLU (for In-Place ABN). The parameter counts of the first
three equal those of the usual definitions (a test checks them).

Every batch norm is ``torch.nn.BatchNorm2d`` followed by its activation as
a module or a residual addition, the patterns ``bnorm.torch.fuse`` finds.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# ---- ResNet ---------------------------------------------------------------------

def _shortcut(cin: int, cout: int, stride: int) -> Optional[nn.Module]:
    """A block's projection shortcut (1x1 convolution + batch norm) where its
    input and output differ in shape, else None (the identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int, act: Callable[[], nn.Module]):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = act()
        self.conv2 = _conv(width, cout, 3)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = act()
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + identity
        return self.act2(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, act: Callable[[], nn.Module]):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv(cin, width, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = act()
        self.conv2 = _conv(width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = act()
        self.conv3 = _conv(width, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act3 = act()
        self.downsample = _shortcut(cin, cout, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + identity
        return self.act3(out)


class ResNet(nn.Module):
    def __init__(self, block, layers: List[int], num_classes: int = 1000,
                 act: Callable[[], nn.Module] = lambda: nn.ReLU(inplace=True)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act = act()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        cin = 64
        for i, n in enumerate(layers):
            width = 64 << i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, width, 2 if (i > 0 and j == 0) else 1, act))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        _init(self)

    def forward(self, x):
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def resnet18_leaky(num_classes: int = 1000, slope: float = 0.01) -> nn.Module:
    """ResNet-18 with LeakyReLU(slope) after every batch norm (the network
    In-Place ABN is compared on)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes,
                  act=lambda: nn.LeakyReLU(slope, inplace=True))


# ---- MobileNetV2 ----------------------------------------------------------------

def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(_conv(cin, cout, k, stride, groups), nn.BatchNorm2d(cout),
                         nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(_ConvBNReLU6(cin, hidden, 1))
        layers += [_ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   _conv(hidden, cout, 1), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    _SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # t, c, n, s

    def __init__(self, num_classes: int = 1000, width: float = 1.0):
        super().__init__()
        cin = _divisible(32 * width)
        self.last = _divisible(1280 * max(1.0, width))
        feats: List[nn.Module] = [_ConvBNReLU6(3, cin, 3, 2)]
        for t, c, n, s in self._SETTINGS:
            cout = _divisible(c * width)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(_ConvBNReLU6(cin, self.last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last, num_classes))
        _init(self)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    return MobileNetV2(num_classes)


# ---- DenseNet-BC ----------------------------------------------------------------

class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv(cin, bn_size * growth, 1)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = _conv(bn_size * growth, growth, 3)

    def forward(self, features: List[torch.Tensor]):
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class _DenseBlock(nn.Module):
    def __init__(self, n: int, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.layers = nn.ModuleList(_DenseLayer(cin + i * growth, growth, bn_size)
                                    for i in range(n))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), _conv(cin, cout, 1),
                         nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, growth: int = 12, blocks=(6, 12, 24, 16), init_features: int = 24,
                 bn_size: int = 4, num_classes: int = 1000):
        super().__init__()
        feats: List[nn.Module] = [nn.Conv2d(3, init_features, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(init_features), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1)]
        c = init_features
        for i, n in enumerate(blocks):
            feats.append(_DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                feats.append(_Transition(c, c // 2))
                c //= 2
        feats += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Linear(c, num_classes)
        _init(self)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def densenet_small(num_classes: int = 1000) -> nn.Module:
    """DenseNet-BC with DenseNet-121's blocks, growth 12, 24 initial features."""
    return DenseNet(num_classes=num_classes)


def densenet121(num_classes: int = 1000) -> nn.Module:
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "mobilenet_v2": mobilenet_v2,
    "densenet_small": densenet_small,
    "resnet18_leaky": resnet18_leaky,
}


def build(name: str, num_classes: int = 1000) -> nn.Module:
    try:
        return MODELS[name](num_classes)
    except KeyError:
        raise ValueError(f"unknown model {name!r}: one of {', '.join(MODELS)}") from None
