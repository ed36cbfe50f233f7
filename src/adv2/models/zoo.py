"""Architectures of the embedded models (torchvision classes, adapted to 64×64 inputs)."""

from __future__ import annotations

from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, ResNet

#: Normalisation of the embedded models (their inputs are [0, 1] shapes images).
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)


def shapes_resnet(num_classes: int = 10, width: int = 16, blocks=(1, 1, 1, 1)) -> ResNet:
    """A small torchvision ``ResNet`` with ``BasicBlock`` s for 64×64 images.

    Stem: 3×3 convolution, stride 2, no max-pool (64 → 32); layer1 32×32, layer2 16×16,
    layer3 8×8, and layer4 keeps stride 1 so the last feature map (``layer4``, ``8·width``
    channels) is 8×8, followed by global average pooling and the linear head ``fc``.
    """
    net = ResNet(BasicBlock, list(blocks), num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.maxpool = nn.Identity()
    net.inplanes = width
    net.layer1 = net._make_layer(BasicBlock, width, blocks[0])
    net.layer2 = net._make_layer(BasicBlock, 2 * width, blocks[1], stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * width, blocks[2], stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * width, blocks[3], stride=1)
    net.fc = nn.Linear(8 * width, num_classes)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


def shapes_densenet(
    num_classes: int = 10, growth_rate: int = 12, block_config=(3, 3, 3), init_features: int = 24
) -> DenseNet:
    """A small torchvision ``DenseNet`` for 64×64 images.

    Stem: 3×3 convolution, stride 2, no pooling (64 → 32); three dense blocks with two
    transitions (32 → 16 → 8), so ``features`` (followed by the functional ReLU in
    ``DenseNet.forward``) is an 8×8 map; global average pooling and the linear head
    ``classifier``.
    """
    net = DenseNet(
        growth_rate=growth_rate,
        block_config=tuple(block_config),
        num_init_features=init_features,
        bn_size=4,
        num_classes=num_classes,
    )
    net.features.conv0 = nn.Conv2d(3, init_features, 3, 2, 1, bias=False)
    net.features.pool0 = nn.Identity()
    nn.init.kaiming_normal_(net.features.conv0.weight)
    return net


ARCHS = {"shapes-resnet": shapes_resnet, "shapes-densenet": shapes_densenet}
