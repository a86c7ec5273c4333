import torch

from vqtool_tinyvgg.model import TinyVGG


def test_output_shape_and_parameter_count():
    model = TinyVGG(num_classes=3)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    convs = (3 * 10 * 9 + 10) + 3 * (10 * 10 * 9 + 10)
    assert sum(p.numel() for p in model.parameters()) == convs + 10 * 16 * 16 * 3 + 3
