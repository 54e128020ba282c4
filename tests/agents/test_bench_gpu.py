"""scripts/bench_gpu.py: refuses clearly without CUDA; on a CUDA machine, each part runs."""

from __future__ import annotations

import pytest
import torch


def test_refuses_without_a_cuda_device(script, capsys):
    status = script("bench_gpu").main(["--device", "cpu"])
    assert status == 2
    assert "needs a CUDA device (--device cpu" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_part_runs_on_cuda(script, tmp_path):
    out = tmp_path / "gpu.md"
    status = script("bench_gpu").main([
        "--policies", "lstm", "expire_span", "--n-envs", "16", "--steps", "2048",
        "--env-counts", "64", "--seconds", "0.2", "--sync-steps", "5", "--out", str(out)])
    assert status == 0
    text = out.read_text()
    assert "syncs / acting step" in text and "| expire_span |" in text
