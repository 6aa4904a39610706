"""--bf16: which parts train under bfloat16 autocast, and the refusal where bfloat16 would be emulated."""
from __future__ import annotations

import pytest
import torch

from frieren import train_cli
from frieren.training import precision
from frieren.training.precision import BF16_PARTS, autocast, check_bf16, parse_bf16_parts


def test_parts_parse_from_a_comma_list_and_unknown_names_are_named():
    assert parse_bf16_parts("") == parse_bf16_parts(None) == frozenset()
    assert parse_bf16_parts(" cavp,detector ,") == {"cavp", "detector"}
    assert parse_bf16_parts(",".join(BF16_PARTS)) == set(BF16_PARTS)
    with pytest.raises(ValueError, match="unknown part\\(s\\) vae.*choose from cavp"):
        parse_bf16_parts("cavp,vae")


def test_autocast_is_bfloat16_only_when_enabled():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(True):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(False):
        assert (a @ b).dtype == torch.float32


def test_a_cpu_without_native_bfloat16_is_refused_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    check_bf16(frozenset())                                     # nothing asked: nothing to refuse
    with pytest.raises(SystemExit, match="no native bfloat16 kernels.*Drop --bf16"):
        check_bf16(frozenset({"cfm"}))
    with pytest.raises(SystemExit, match="Drop --bf16"):           # before any data is made
        train_cli.main(["cfm", "--run-dir", str(tmp_path / "run"), "--bf16", "cfm", "--no-progress"])
    assert not (tmp_path / "run" / "cfm").exists()


def test_the_cli_names_an_unknown_part(tmp_path):
    with pytest.raises(SystemExit, match="unknown part\\(s\\) vae"):
        train_cli.main(["vae", "--run-dir", str(tmp_path / "run"), "--bf16", "vae", "--no-progress"])
