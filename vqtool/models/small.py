"""The course's small CNNs, built in."""

from __future__ import annotations

from torch import nn

from vqtool.registry import register_model


def conv_block(in_channels: int, out_channels: int, batch_norm: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two conv blocks (16, 32 channels) and a linear classifier, for 28x28 images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(conv_block(in_channels, 16), conv_block(16, 32))
        self.flatten = nn.Flatten()
        self.head = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, x):
        return self.head(self.flatten(self.features(x)))


class SimpleCNN(nn.Module):
    """Three conv blocks (32, 64, 128 channels) and a dropout MLP, for 32x32 images."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.features = nn.Sequential(conv_block(in_channels, 32), conv_block(32, 64), conv_block(64, 128))
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(128 * 4 * 4, 256), nn.ReLU(inplace=True), nn.Dropout(0.5)
        )
        self.head = nn.Linear(256, num_classes)

    def forward(self, x):
        return self.head(self.mlp(self.features(x)))


class ConvBNNet(nn.Module):
    """Conv-BN-ReLU blocks with global average pooling: any input size."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths=(32, 64, 128, 256)):
        super().__init__()
        blocks, channels = [], in_channels
        for width in widths:
            blocks.append(conv_block(channels, width, batch_norm=True))
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


@register_model(input_size=28, fixed_size=True, in_channels=1, head="head")
def smallcnn(num_classes: int, in_channels: int) -> nn.Module:
    """Two conv blocks (16/32) + linear, for 28x28 grayscale (the course's SmallCNN)."""
    return SmallCNN(num_classes, in_channels)


@register_model(input_size=32, fixed_size=True, in_channels=3, head="head")
def simplecnn(num_classes: int, in_channels: int) -> nn.Module:
    """Three conv blocks (32/64/128) + dropout MLP, for 32x32 colour images."""
    return SimpleCNN(num_classes, in_channels)


@register_model("cnn-bn", input_size=64, min_size=16, in_channels=3, head="head")
def cnn_bn(num_classes: int, in_channels: int) -> nn.Module:
    """Conv-BN-ReLU blocks (32/64/128/256) with global average pooling, any input size."""
    return ConvBNNet(num_classes, in_channels)
