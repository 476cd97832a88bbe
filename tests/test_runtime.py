import pytest
import torch

from cagnet.runtime import flush_denormals, torch_threads

SUBNORMAL_PRODUCT = (1e-30, 1e-10)  # float32 product 1e-40 is subnormal (normal floats end at 1.2e-38)


def _product() -> float:
    a, b = SUBNORMAL_PRODUCT
    return (torch.tensor([a], dtype=torch.float32) * torch.tensor([b], dtype=torch.float32)).item()


def test_flush_denormals_turns_subnormal_results_into_zero():
    try:
        torch.set_flush_denormal(False)
        assert _product() != 0.0  # without flushing the product is a subnormal
        if not flush_denormals():
            pytest.skip("this CPU cannot flush subnormals")
        assert _product() == 0.0
        assert (torch.tensor([3.0]) * 2.0).item() == 6.0  # normal floats unchanged
    finally:
        torch.set_flush_denormal(True)


def test_torch_threads_sets_and_restores_the_count_and_flushes():
    previous = torch.get_num_threads()
    torch.set_flush_denormal(False)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        if torch.set_flush_denormal(True):  # supported: the context had already switched it on
            torch.set_flush_denormal(False)
            with torch_threads(None):
                assert _product() == 0.0
    assert torch.get_num_threads() == previous


def test_torch_threads_restores_the_count_after_an_error():
    previous = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == previous


def test_cudnn_autotune_is_restored():
    from cagnet.runtime import cudnn_autotune

    previous = torch.backends.cudnn.benchmark
    with cudnn_autotune(not previous):
        assert torch.backends.cudnn.benchmark == (not previous)
    assert torch.backends.cudnn.benchmark == previous


def test_copy_to_device_keeps_tensors_already_there():
    from cagnet.runtime import copy_to_device

    tensor = torch.arange(4)
    assert copy_to_device(tensor, torch.device("cpu")) is tensor
    assert copy_to_device(tensor, torch.device("meta")).device.type == "meta"


def test_notes_go_to_stdout_only_inside_a_jupyter_kernel(monkeypatch):
    """Jupyter shows stderr as a red error box; elsewhere stdout carries a command's results."""
    import sys
    import types

    from cagnet.runtime import notes_stream

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))     # imported, no kernel
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert notes_stream() is sys.stderr
    kernel_shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel_shell))
    assert notes_stream() is sys.stdout


def test_idle_threads_counts_the_cores_no_other_work_keeps_busy():
    from cagnet.runtime import idle_threads

    assert idle_threads(busy=0.1, cores=2) == 2        # an idle 2-core CPU: both cores
    assert idle_threads(busy=1.2, cores=2) == 1        # another busy process: one thread
    assert idle_threads(busy=7.0, cores=4) == 1        # at least one
    assert idle_threads(busy=1.6, cores=8) == 6
    from cagnet import runtime

    assert 1 <= idle_threads() <= max(1, runtime._DEFAULT_THREADS)   # the measured load and cores
    assert runtime.busy_cores(samples=2, interval=0.0) >= 0
