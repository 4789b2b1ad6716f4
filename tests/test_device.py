import torch

from rhizome.device import detect_device, physical_cores


def test_force_cpu_always_gives_the_cpu_with_physical_core_threads():
    device = detect_device(force_cpu=True)
    assert device.kind == "cpu"
    assert device.threads == physical_cores() >= 1
    assert torch.get_num_threads() == device.threads
    assert "CPU" in device.describe()


def test_detection_matches_what_torch_sees():
    device = detect_device()
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert device.kind == expected
