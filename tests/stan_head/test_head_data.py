"""Split loading: chunked reads give exactly what one read gives; batches are float32 and shuffled by seed."""

from __future__ import annotations

import numpy as np
import torch

from features.store import FeatureStore
from stan_head.data import load_split


def test_chunked_load_equals_one_read(tiny_store):
    store = FeatureStore.open(tiny_store)
    whole = store.read_split("train")
    chunked = load_split(store, "train", chunk=7)  # spans shard boundaries and a short last chunk
    assert chunked.clip_id == whole.clip_id
    assert chunked.visual.dtype == torch.float16
    np.testing.assert_array_equal(chunked.visual.numpy(), whole.visual)
    np.testing.assert_array_equal(chunked.audio.numpy(), whole.audio)
    np.testing.assert_array_equal(chunked.segment_mask.numpy(), whole.segment_mask)
    np.testing.assert_array_equal(chunked.label.numpy(), whole.label_idx)
    np.testing.assert_array_equal(chunked.segment_label.numpy(), whole.segment_label)


def test_batches_cover_the_split_once_in_a_seeded_order(tiny_store):
    split = load_split(FeatureStore.open(tiny_store), "train")
    dev = torch.device("cpu")
    first = [b.label for b in split.batches(8, dev, torch.Generator().manual_seed(3))]
    again = [b.label for b in split.batches(8, dev, torch.Generator().manual_seed(3))]
    other = [b.label for b in split.batches(8, dev, torch.Generator().manual_seed(4))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert sum(len(x) for x in first) == len(split)
    batch = next(split.batches(8, dev))
    assert batch.visual.dtype == torch.float32 and batch.visual.shape == (8, 4, 3, 3, 16)
    assert batch.segment_mask.dtype == torch.bool and batch.label.dtype == torch.int64


def test_take_gathers_rows_with_their_ids_and_labels(tiny_store):
    split = load_split(FeatureStore.open(tiny_store), "train")
    part = split.take(slice(2, 5))
    assert part.clip_id == split.clip_id[2:5] and part.visual.dtype == torch.float32
    assert torch.equal(part.label, split.label[2:5]) and torch.equal(part.segment_label, split.segment_label[2:5])
    np.testing.assert_array_equal(part.visual.numpy(), split.visual[2:5].float().numpy())
    picked = split.take(torch.tensor([4, 0]))
    assert picked.clip_id == [split.clip_id[4], split.clip_id[0]]
