"""TinyVGG (CNN Explainer): two blocks of two 3x3 convolutions and a max-pool, then a linear classifier.

Importing this module registers the architecture; vqtool imports it through
the ``vqtool.models`` entry point declared in pyproject.toml.
"""

from torch import nn

from vqtool.registry import register_model


class TinyVGG(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, hidden: int = 10, size: int = 64):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(block(in_channels, hidden), block(hidden, hidden))
        self.flatten = nn.Flatten()
        self.head = nn.Linear(hidden * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.head(self.flatten(self.features(x)))


@register_model("tinyvgg", input_size=64, fixed_size=True, in_channels=3, head="head")
def tinyvgg(num_classes: int, in_channels: int) -> nn.Module:
    """TinyVGG from the CNN Explainer: 2x(conv-conv-pool), 10 channels, 64x64 input."""
    return TinyVGG(num_classes, in_channels)
