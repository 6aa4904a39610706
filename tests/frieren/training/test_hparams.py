"""The training CLI's per-stage hyper-parameters: defaults and overrides reach the stages."""
from __future__ import annotations

import argparse

from frieren.train_cli import add_arguments
from frieren.training.hparams import DEFAULTS, current_hparams, hp_from_args


def _parse(*argv):
    ap = argparse.ArgumentParser()
    add_arguments(ap)
    return ap.parse_args(list(argv))


def test_single_stage_final_lr_factor_default_and_override():
    for stage in ("vae", "cfm"):
        assert hp_from_args(stage, _parse(stage)).final_lr_factor == DEFAULTS[stage].final_lr_factor
    hp = hp_from_args("cavp", _parse("cavp", "--final-lr-factor", "0.1", "--steps", "7"))
    assert hp.final_lr_factor == 0.1 and hp.steps == 7


def test_default_command_takes_per_stage_final_lr_factor():
    hps = current_hparams(_parse("default", "--cavp-final-lr-factor", "0.1", "--cfm-final-lr-factor", "0.2"))
    assert hps["cavp"].final_lr_factor == 0.1 and hps["cfm"].final_lr_factor == 0.2
    assert hps["vae"].final_lr_factor == DEFAULTS["vae"].final_lr_factor
    assert hps["reflow"].final_lr_factor == DEFAULTS["reflow"].final_lr_factor


def test_decay_steps_reach_single_stage_and_default_commands():
    assert hp_from_args("cavp", _parse("cavp")).decay_steps == DEFAULTS["cavp"].decay_steps == 0
    hp = hp_from_args("cavp", _parse("cavp", "--final-lr-factor", "0.02", "--decay-steps", "1500"))
    assert (hp.final_lr_factor, hp.decay_steps) == (0.02, 1500)
    hps = current_hparams(_parse("default", "--cavp-final-lr-factor", "0.02", "--cavp-decay-steps", "1500"))
    assert hps["cavp"].decay_steps == 1500 and hps["cfm"].decay_steps == DEFAULTS["cfm"].decay_steps


def test_ema_reaches_single_stage_and_default_commands():
    assert hp_from_args("cavp", _parse("cavp")).ema == DEFAULTS["cavp"].ema == 0.0
    assert hp_from_args("cfm", _parse("cfm")).ema == DEFAULTS["cfm"].ema > 0
    assert hp_from_args("cavp", _parse("cavp", "--ema", "0.999")).ema == 0.999
    assert hp_from_args("cfm", _parse("cfm", "--ema", "0")).ema == 0.0            # 0 turns it off
    hps = current_hparams(_parse("default", "--cavp-ema", "0.999"))
    assert hps["cavp"].ema == 0.999 and hps["cfm"].ema == DEFAULTS["cfm"].ema
