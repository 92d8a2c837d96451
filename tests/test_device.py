"""Device choice (auto → cuda → mps → cpu), CPU threads and the autocast helper."""

from __future__ import annotations

import contextlib

import pytest
import torch

from napari_cryo_openset.device import (
    autocast,
    available_devices,
    choose_device,
    cpu_count,
    describe,
    set_cpu_threads,
)
from napari_cryo_openset.errors import CryoOpensetError, ParameterError

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
no_gpu = pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="this machine has a GPU")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@no_gpu
def test_auto_is_cpu_without_gpu():
    assert choose_device("auto") == torch.device("cpu")
    assert choose_device(None) == torch.device("cpu")
    assert choose_device() == torch.device("cpu")
    assert available_devices() == ["auto", "cpu"]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_auto_prefers_cuda():
    assert choose_device("auto").type == "cuda"
    assert choose_device("cuda:0") == torch.device("cuda:0")
    assert "cuda" in available_devices()


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu ", torch.device("cpu")])
def test_cpu_spellings(name):
    assert choose_device(name) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_cuda_is_a_clear_error(name):
    with pytest.raises(ParameterError, match="cuda") as info:
        choose_device(name)
    assert "not available" in str(info.value) or "no CUDA" in str(info.value)
    assert isinstance(info.value, CryoOpensetError)


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_without_mps_is_a_clear_error():
    with pytest.raises(ParameterError, match="mps"):
        choose_device("mps")


@pytest.mark.parametrize("name", ["tpu", "gpu", "xla", "", "cpu0x", "vulkan:1"])
def test_bad_names_list_the_choices(name):
    if name == "":
        # an empty string means "auto" (as None does)
        assert choose_device(name).type in ("cpu", "cuda", "mps")
        return
    with pytest.raises(ParameterError) as info:
        choose_device(name)
    message = str(info.value)
    assert repr(name) in message or name in message
    for choice in ("auto", "cpu", "cuda", "mps"):
        assert choice in message


def test_bad_device_index_is_a_parameter_error():
    with pytest.raises(ParameterError):
        choose_device("cpu:x")


def test_set_cpu_threads(restore_threads):
    assert set_cpu_threads(1) == 1
    assert torch.get_num_threads() == 1
    n = set_cpu_threads()
    assert n == min(cpu_count(), 16)
    assert torch.get_num_threads() == n
    assert 1 <= cpu_count()


@pytest.mark.parametrize("bad", [0, -2])
def test_set_cpu_threads_refuses_non_positive(bad, restore_threads):
    with pytest.raises(ParameterError, match="threads"):
        set_cpu_threads(bad)


def test_autocast_is_a_no_op_on_cpu():
    cpu = torch.device("cpu")
    ctx = autocast(cpu)
    assert isinstance(ctx, contextlib.nullcontext)
    a = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    with autocast(cpu):
        out = a @ a
        assert not torch.is_autocast_enabled("cpu")
    assert out.dtype == torch.float32
    assert torch.equal(out, a @ a)
    # disabled on any device: also a no-op
    assert isinstance(autocast(torch.device("cuda"), enabled=False), contextlib.nullcontext)


def test_describe_cpu(restore_threads):
    set_cpu_threads(1)
    assert describe(torch.device("cpu")) == "cpu (1 threads)"
