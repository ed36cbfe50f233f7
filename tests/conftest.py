import os

# One intra-op thread unless OMP_NUM_THREADS says otherwise (at most 2 either way). The tests' tensors are
# small, and OpenMP threads that wait on each other collapse when the cores are shared: on a busy 2-core
# machine the fast suite took 48 min with 2 threads and 4.3 min with 1. Subprocesses (CLI runs, torchrun)
# inherit the setting through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    _threads = int(os.environ["OMP_NUM_THREADS"])
except ValueError:
    _threads = 1
torch.set_num_threads(max(1, min(2, _threads)))


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
