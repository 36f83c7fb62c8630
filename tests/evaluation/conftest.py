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


@pytest.fixture(scope="session")
def evaluation_run(synthetic_dataset, tmp_path_factory: pytest.TempPathFactory):
    """(store dir, run dir): the session's synthetic dataset → real features (EfficientNet-Lite0 at
    64 px, a 2×2 grid; log-mel audio) → a STAN head trained for a few epochs."""
    from features.extract import ExtractConfig, extract_features
    from pipelines.segments import SegmentSpec
    from stan_head.train import TrainConfig, train_head

    root = tmp_path_factory.mktemp("evaluation")
    store = extract_features(
        ExtractConfig(dataset_dir=synthetic_dataset, out_root=root / "features", workers=0, segment=SegmentSpec(frame_size=64))
    )
    summary = train_head(
        TrainConfig(store=store.store_dir, out=root / "run", epochs=4, min_steps=0, batch_size=8, device="cpu", progress=False,
                    train_split="train", val_split="train", test_split="test")
    )
    return store.store_dir, summary.run_dir
