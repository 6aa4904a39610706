"""frieren.machine: what a benchmark report says about the machine it ran on."""
from pathlib import Path

from frieren.machine import cpu_model_name, machine_description


def test_cpu_model_name_reads_the_first_model_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Some CPU 9000\n\nprocessor\t: 1\n"
                    "model name\t: Some CPU 9000\n")
    assert cpu_model_name(info) == "Some CPU 9000"


def test_cpu_model_name_without_cpuinfo_is_none(tmp_path: Path) -> None:
    assert cpu_model_name(tmp_path / "missing") is None


def test_machine_description_names_torch_and_its_vector_kernels() -> None:
    import torch
    d = machine_description()
    assert d["torch"] == torch.__version__
    assert d["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(d["cpu_count"], int) and d["cpu_count"] >= 1
