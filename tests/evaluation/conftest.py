"""Evaluation tests run single-threaded: the optimisation loops here are many tiny ops, which
thread contention on a shared 2-core CI machine slows down more than one thread does."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
