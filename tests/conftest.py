import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shapes_test():
    from adv2.data import shapes

    return shapes(16, split="test", seed=0)


@pytest.fixture(scope="session")
def resnet_model():
    import adv2

    return adv2.models.load("shapes-resnet")


@pytest.fixture(scope="session")
def densenet_model():
    import adv2

    return adv2.models.load("shapes-densenet")
