"""Fixed costs of extraction (issue 18.3): the inference path imports no timm and no torch._dynamo,
and the timm-free EfficientNet-Lite0 gives timm's values bit for bit (eager and frozen graph)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from features.extractors.base import freeze_graph
from features.extractors.registry import VISUAL_NAMES
from features.extractors.efficientnet_lite0 import Lite0, build_lite0_classifier

REPO = Path(__file__).resolve().parents[1].parent


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def test_lite0_is_timms_efficientnet_lite0_bit_for_bit():
    import timm

    ours, _ = build_lite0_classifier()
    theirs = timm.create_model("efficientnet_lite0", pretrained=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())   # the same names in the same order
    theirs.load_state_dict(ours.state_dict(), strict=True)
    theirs.eval()
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.equal(ours.forward_features(x), theirs.forward_features(x))
        assert torch.equal(freeze_graph(_Features(ours).eval(), x)(x), freeze_graph(_Features(theirs).eval(), x)(x))
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert isinstance(Lite0().classifier, torch.nn.Linear)


_PROBE = """
import json, sys, torch
from features.extractors import AudioConfig, VisualConfig, build_audio, build_visual
v = build_visual(VisualConfig(), input_size=64)
a = build_audio(AudioConfig())
v(torch.zeros(2, 64, 64, 3, dtype=torch.uint8)); a(torch.zeros(2, 16000))
print(json.dumps({m: m in sys.modules for m in ("timm", "torchvision", "torch._dynamo")}))
"""


def test_the_inference_path_imports_no_timm_torchvision_or_dynamo():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {"timm": False, "torchvision": False, "torch._dynamo": False}


def _decoded_frames(path, n: int, size: int) -> torch.Tensor:
    """``n`` real frames (uint8 (n, size, size, 3)) of a sample video."""
    from pipelines.media import decode_clip
    from pipelines.segments import SegmentSpec

    clip = decode_clip(path, SegmentSpec(num_segments=5, frames_per_segment=2, frame_size=size))
    return torch.from_numpy(clip.frames[clip.segment_mask].reshape(-1, size, size, 3)[:n].copy())


@pytest.mark.parametrize("name", VISUAL_NAMES)
def test_the_graph_traced_on_the_small_probe_gives_the_values_of_one_traced_on_real_frames(media_files, name):
    """The frozen graph is traced on one black frame of TRACE_PROBE_SIDE px, not on the first real batch: for
    every registered CNN its values equal those of a graph traced on real frames of the full size, at every
    batch size, and the warm-up builds it before the first real batch (issue 18.3)."""
    from features.extractors import VisualConfig, build_visual
    from features.extractors.base import TRACE_PROBE_SIDE

    torch.set_num_threads(1)
    size = TRACE_PROBE_SIDE + 32   # the probe is smaller than the frames
    frames = _decoded_frames(media_files.bigbuckbunny, 8, size)
    weights = None if name == "efficientnet_lite0" else "random"   # "random" is seeded: the same in both
    warmed = build_visual(VisualConfig(name=name, weights=weights), input_size=size)
    reference = build_visual(VisualConfig(name=name, weights=weights), input_size=size)
    warmed.warm_up(4)
    assert warmed._graph is not None   # built in the warm-up, not by the first real batch
    with torch.inference_mode():   # traced on 3 real frames of the full size, as the CNN sees them
        reference._graph = freeze_graph(reference.module, reference.model_input(frames[:3]), name)
    for n in (3, 4, 1, 8):
        assert torch.equal(warmed(frames[:n]), reference(frames[:n])), n


@pytest.mark.filterwarnings("ignore::FutureWarning")   # torch.jit is deprecated in torch 2.14, still supported
@pytest.mark.parametrize("name", VISUAL_NAMES)
def test_the_graph_traced_as_one_module_gives_the_values_of_the_module_tree_traced(media_files, name):
    """freeze_graph traces the CNN as one module holding all its tensors (one ScriptModule instead of one per
    submodule, the trace's main cost): for every registered CNN the values equal those of the module tree
    traced, frozen and optimised as it is (issue 18.3)."""
    from features.extractors import VisualConfig, build_visual

    torch.set_num_threads(1)
    weights = None if name == "efficientnet_lite0" else "random"
    ext = build_visual(VisualConfig(name=name, weights=weights), input_size=96)
    x = ext.model_input(_decoded_frames(media_files.bigbuckbunny, 4, 96))
    with torch.inference_mode():
        tree = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(ext.module, x[:2], check_trace=False)))
        one = freeze_graph(ext.module, x[:2], name)
        for n in (1, 4):
            assert torch.equal(one(x[:n]), tree(x[:n])), n


def test_the_model_is_built_and_warmed_once_per_process_and_shared_by_threads():
    import threading

    from features.extractors import AudioConfig, VisualConfig, weights_identity
    from features.shard_engine import _extractors

    got: list[tuple] = []
    sha = weights_identity(VisualConfig())

    def build() -> None:
        got.append(_extractors(VisualConfig(), AudioConfig(), "cpu", 64, 16000, sha, None, 2))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and all(g[0] is got[0][0] and g[1] is got[0][1] for g in got)
    assert got[0][0]._graph is not None


def test_the_local_cluster_runs_with_quiet_dask_settings(tmp_path):
    """The in-process cluster is made with the worker's profiler off and 1-s ticks and monitors
    (features.runner.LOCAL_CLUSTER_CONFIG); Dask's global configuration is left as it was."""
    import dask
    import distributed  # noqa: F401 - loads Dask's distributed defaults

    from features.extract import ExtractConfig
    from features.runner import dask_client

    before = dask.config.get("distributed.admin.tick.interval")
    cfg = ExtractConfig(dataset_dir=tmp_path, out_root=tmp_path, workers=2)
    with dask_client(cfg) as client:
        scheduler = client.cluster.scheduler
        (worker,) = client.cluster.workers.values()
        assert scheduler._tick_interval == worker._tick_interval == 1.0
        assert "profile" not in worker.periodic_callbacks
        assert worker.memory_manager.memory_monitor_interval == 1.0
        assert client.submit(sum, [1, 2]).result() == 3
        assert worker.state.nthreads == 2
    assert dask.config.get("distributed.admin.tick.interval") == before


def test_a_scheduler_unpickling_a_shard_task_imports_no_torch():
    """Dask's scheduler unpickles the task graph: the shard task's function must not pull torch in there."""
    import cloudpickle

    from features.shard_task import run_shard

    code = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(sorted(m for m in ('torch', 'features.shard_engine', 'decord') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], input=cloudpickle.dumps(run_shard), cwd=REPO, env=env,
                         capture_output=True, timeout=120, check=True).stdout
    assert out.decode().strip() == "[]"
