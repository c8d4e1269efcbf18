"""bench/train_step.py: the 3DSL and RGB-only steps are timed through the job's own code, and the split charges
every part of a step, backward included, to the code path that made it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ runs from the checkout (python -m bench); it is not an installed package
from bench.train_step import PARTS, Clock, owners  # noqa: E402


def test_backward_work_is_charged_to_the_part_whose_forward_made_it() -> None:
    from torch.profiler import ProfilerActivity, profile

    from reid3dsl.profiling import observe, section

    trunk = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    head = nn.Linear(8, 4)
    clock = Clock()
    with profile(activities=[ProfilerActivity.CPU]) as prof, observe(clock):
        with section("heads"):
            with section("backbones"):
                fmap = trunk(torch.randn(2, 3, 16, 8))
            out = head(fmap.mean(dim=(2, 3)))
        out.square().sum().backward()
    assert set(clock.take()) == {"heads", "backbones"}
    charged: dict[str, set[str]] = {}
    for event, owner in owners(list(prof.events())):
        charged.setdefault(event.name, set()).add(owner)
    backward = "autograd::engine::evaluate_function: "
    assert charged[backward + "ConvolutionBackward0"] == {"backbones"}
    assert charged[backward + "AddmmBackward0"] == {"heads"}
    assert charged["aten::convolution"] == {"backbones"} and charged["aten::addmm"] == {"heads"}
    assert charged[backward + "SumBackward0"] == {"other"}  # made outside every range


def test_nested_ranges_keep_their_time_out_of_the_enclosing_one() -> None:
    ticks = iter([0.0, 1.0, 3.0, 6.0])
    clock = Clock(now=lambda: next(ticks))
    clock.enter("heads")
    clock.enter("backbones")
    clock.leave()
    clock.leave()
    assert clock.take() == {"backbones": 2.0, "heads": 4.0}
    assert clock.take() == {}


@pytest.mark.slow
def test_train_step_benchmark_times_both_models_and_splits_the_3dsl_step(
    toy_shards: Callable[..., str], standin_dir: str, tmp_path: Path
) -> None:
    root = toy_shards(tmp_path / "toy", ids=8, per_id=6, splits=("train", "query", "gallery"), size=(64, 32))
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.train_step", "--quick", "--out", str(out), "--config", "configs/smoke.yaml",
         "--set", f"data.root={root}", "--set", "data.synthesize=false", "--set", f"body.standin_dir={standin_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())["train_step"]
    assert result["precision"] == "fp32" and result["batch_size"] == 4 and result["torch_threads"] == 1
    assert result["skipped_steps"] == {"3dsl": 0, "rgb": 0}
    assert result["step_ms"]["3dsl"] > 0 and result["step_ms"]["rgb"] > 0
    (fig,) = result["summary"]
    assert fig["baseline"] == "RGB-only step" and fig["target"] == "<= 2.5"
    assert fig["ratio"] == pytest.approx(result["step_ms"]["3dsl"] / result["step_ms"]["rgb"])
    ms = result["split"]["ms"]
    assert set(ms) == set(PARTS)
    # Every range reached its code path (the renderer, SMPL, the discriminator, the optimizer step ...).
    assert all(ms[p] > 0 for p in PARTS if p != "other") and ms["other"] >= 0
    assert "where a 3DSL step's" in run.stdout
