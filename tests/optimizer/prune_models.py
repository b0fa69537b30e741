"""Small CNNs with the dependencies structured pruning must respect, built in the tests.

``TinyResNet``: BatchNorm after every conv, an identity residual join, a strided block with a
1x1 downsample (a second residual join) and two branches concatenated before a 1x1 conv.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)
    )


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = conv_bn(cout, cout)
        self.down = conv_bn(cin, cout, stride, kernel=1) if stride != 1 or cin != cout else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        identity = input if self.down is None else self.down(input)
        return torch.relu(self.conv2(torch.relu(self.conv1(input))) + identity)


class TinyResNet(nn.Module):
    # Groups: the stem with block1's conv2 (identity join), block2's conv2 with its downsample
    # (projection join), and one group for each other conv; fc's outputs are the model's.
    COUPLED = (
        {"stem.0.weight", "block1.conv2.0.weight"},
        {"block2.conv2.0.weight", "block2.down.0.weight"},
    )

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.block1 = Block(8, 8, 1)
        self.block2 = Block(8, 16, 2)
        self.left = conv_bn(16, 6)
        self.right = conv_bn(16, 10)
        self.mix = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        input = self.block2(self.block1(torch.relu(self.stem(input))))
        input = torch.cat([torch.relu(self.left(input)), torch.relu(self.right(input))], dim=1)
        input = torch.relu(self.mix(input))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(input, 1), 1))  # type: ignore[no-any-return]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Trained-looking BatchNorm statistics and affine terms (fresh ones are all ones/zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def silence_channels(model: nn.Module, groups: list[set[str]], seed: int = 0) -> dict[str, Any]:
    """Zeroes half the output channels of every group (conv rows and its BatchNorm's affine).

    Those channels then carry exact zeros everywhere, so removing them must not change the
    model's output: a pruning that slices the wrong layers, offsets or BatchNorms does.
    Returns the silenced channel indices by weight name.
    """
    modules = dict(model.named_modules())
    silenced: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for group in groups:
            first = modules[next(iter(group)).removesuffix(".weight")]
            assert isinstance(first, nn.Conv2d)
            channels = first.out_channels
            index = torch.randperm(channels, generator=gen)[: channels // 2].sort().values
            for weight in group:
                conv_name = weight.removesuffix(".weight")
                conv = modules[conv_name]
                assert isinstance(conv, nn.Conv2d)
                conv.weight[index] = 0.0
                if conv.bias is not None:
                    conv.bias[index] = 0.0
                parent, _, leaf = conv_name.rpartition(".")
                bn = modules.get(f"{parent}.{int(leaf) + 1}") if leaf.isdigit() else None
                if isinstance(bn, nn.BatchNorm2d):
                    bn.weight[index] = 0.0
                    bn.bias[index] = 0.0
                silenced[weight] = index.numpy()
    return silenced
