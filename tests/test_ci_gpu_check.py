"""ci_jobs.gpu_check: a GPU job fails early, with the reason, when TensorFlow sees no GPU."""

from __future__ import annotations

import pytest

from ci_jobs import gpu_check
from ci_jobs.gpu_check import Findings

SMI = "NVIDIA-SMI 550.54.15    Driver Version: 550.54.15    CUDA Version: 12.4\n"
GPU = "/physical_device:GPU:0"


def findings(**changes) -> Findings:
    base = {
        "nvidia_smi": SMI,
        "tf_gpus": [],
        "built_with_cuda": True,
        "cuda_build": "CUDA 12.5.1, cuDNN 9",
    }
    return Findings(**{**base, **changes})


@pytest.mark.parametrize(
    ("found", "reason"),
    [
        (findings(tf_gpus=[GPU]), None),
        (findings(), "TensorFlow sees no GPU although nvidia-smi does (CUDA 12.5.1, cuDNN 9"),
        (findings(nvidia_smi=None), "TensorFlow sees no GPU and nvidia-smi does not run"),
        (findings(built_with_cuda=False), "this TensorFlow is built without CUDA"),
    ],
    ids=["gpu-seen", "driver-mismatch", "no-driver", "cpu-build"],
)
def test_reasons(found: Findings, reason: str | None) -> None:
    problem = gpu_check.problem(found)
    assert problem == reason if reason is None else reason in problem


def test_fails_with_the_reason_after_printing_nvidia_smi(capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main({}, findings()) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(SMI)
    assert "GPUs it sees: none" in captured.out
    assert captured.err.startswith("gpu_check: error: TensorFlow sees no GPU although nvidia-smi")


def test_cpu_only_rehearsal_reports_instead_of_failing(capsys: pytest.CaptureFixture) -> None:
    assert gpu_check.main({"REHEARSAL_CPU_ONLY": "1"}, findings(nvidia_smi=None)) == 0
    assert "REHEARSAL_CPU_ONLY=1, so no GPU is expected" in capsys.readouterr().out
    assert gpu_check.main({"REHEARSAL_CPU_ONLY": "yes"}, findings(nvidia_smi=None)) == 1


def test_gather_uses_tensorflows_device_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    class Device:
        name = GPU

    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind: [Device()] if kind == "GPU" else []
    )
    monkeypatch.setattr(gpu_check, "run_nvidia_smi", lambda: SMI)
    found = gpu_check.gather()
    assert found.tf_gpus == [GPU] and found.nvidia_smi == SMI
    assert gpu_check.main({}, found) == 0
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: [])
    assert gpu_check.main({}, gpu_check.gather()) == 1
