"""--device: cuda refuses to start without a usable CUDA or a GPU the weights fit on; cpu stays on the CPU.

No GPU here: "CUDA usable" and the GPUs' free memory are torch.cuda functions monkeypatched to what a
node would report; the one line a user reads (sources.one_line, what __main__ logs) is asserted.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from predictor.loading import device
from predictor.loading.loader import load
from predictor.loading.sources import one_line
from predictor.settings import parse_settings

GIB = 1 << 30


def _gpus(monkeypatch, *free_bytes: int, name: str = "NVIDIA A100-SXM4-40GB MIG 1g.5gb") -> None:
    """Pretend torch is a CUDA build that sees these GPUs with this much free memory each."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free_bytes))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free_bytes[i], 2 * free_bytes[i]))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: name)


def _failed_load(argv) -> str:
    settings = parse_settings(argv, {})
    with pytest.raises(device.BadDevice) as failed:
        load(settings)
    line = one_line(settings.model, failed.value)
    assert line is not None and "\n" not in line
    return line


def test_cuda_on_a_torch_without_cuda_fails_in_one_line(monkeypatch, tiny_dir):
    monkeypatch.setattr(torch.version, "cuda", None)
    line = _failed_load(["--model", str(tiny_dir), "--device", "cuda"])
    assert line.startswith("--device cuda: CUDA is not usable (this torch build has no CUDA support)")
    assert "runtimeClassName" in line and "--device auto would load on the CPU" in line


def test_a_driver_too_old_for_the_image_is_the_reason_given(monkeypatch, tiny_dir):
    def too_old():
        # What torch.cuda.is_available() does on a driver older than the CUDA it was built for.
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 12020).\n"
            "Please update your GPU driver",
            UserWarning,
            stacklevel=2,
        )
        return False

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", too_old)
    line = _failed_load(["--model", str(tiny_dir), "--device", "cuda"])
    assert "CUDA is not usable (The NVIDIA driver on your system is too old (found version 12020)." in line


def test_no_gpu_visible_is_the_reason_when_torch_gives_none(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(device.BadDevice, match=r"CUDA is not usable \(no GPU is visible to the process\)"):
        device.use_cuda("cuda", torch)
    assert device.use_cuda("auto", torch) is False  # auto falls back to the CPU (with a warning in load)


def test_weights_that_do_not_fit_the_gpu_fail_before_loading(monkeypatch, tiny_dir):
    params = device.parameter_count(str(tiny_dir))
    assert params and params > 1000
    _gpus(monkeypatch, params * 2 + GIB - 1)  # one byte short of float16 weights plus the headroom
    line = _failed_load(["--model", str(tiny_dir), "--device", "cuda"])
    assert line.startswith(f"--device cuda: the weights need {params * 2 / 1e9:.1f} GB (float16) plus 1.1 GB")
    assert "1 GPU(s) (NVIDIA A100-SXM4-40GB MIG 1g.5gb)" in line and "nothing is offloaded to the CPU" in line
    assert "nvidia.com/gpu.memory" in line


def test_the_fit_counts_every_gpu_device_map_auto_may_use(monkeypatch, tiny_dir):
    params = device.parameter_count(str(tiny_dir))
    half = (params * 2 + GIB) // 2 + 1
    _gpus(monkeypatch, half, half)
    device.check_fits(str(tiny_dir), torch.float16, "auto", torch)  # two GPUs together: fits
    with pytest.raises(device.BadDevice, match=r"1 GPU\(s\)"):
        device.check_fits(str(tiny_dir), torch.float16, "cuda:1", torch)  # one of them alone does not
    with pytest.raises(device.BadDevice, match=r"\(float32\)"):
        device.check_fits(str(tiny_dir), torch.float32, "auto", torch)  # twice the bytes


class _Placed:
    def __init__(self, device_map):
        self.hf_device_map = device_map


def test_layers_offloaded_by_accelerate_are_refused():
    device.check_placement(_Placed({"transformer.wte": 0, "transformer.h.0": "cuda:1", "lm_head": 0}))
    with pytest.raises(device.BadDevice) as offloaded:
        device.check_placement(_Placed({"transformer.wte": 0, "transformer.h.27": "cpu", "lm_head": "disk"}))
    assert str(offloaded.value).startswith(
        "--device cuda: the model does not fit the GPU: 2 module(s) were placed off the GPU (lm_head, transformer.h.27)"
    )


def test_cpu_stays_on_the_cpu_where_cuda_is_usable(monkeypatch, tiny_dir):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("--device cpu must not ask for CUDA"))
    loaded = load(parse_settings(["--model", str(tiny_dir), "--device", "cpu"], {}))
    assert loaded.model.device.type == "cpu" and loaded.model.dtype == torch.float32


def test_a_hub_id_has_no_size_to_check_before_download():
    assert device.parameter_count("EleutherAI/gpt-j-6b") is None
