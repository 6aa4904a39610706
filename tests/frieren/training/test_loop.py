"""The generic trainer: resume restores step, optimizer, scheduler and EMA exactly."""
from __future__ import annotations

import dataclasses
import json

import torch

from frieren.config import CondConfig, EstimatorConfig
from frieren.models.cond import CondEncoder
from frieren.models.estimator import ChannelConcatDiT
from frieren.training.ddp import DistContext, setup
from frieren.training.loop import TrainConfig, Trainer, load_final
from frieren.training.objectives import CFMObjective

torch.set_num_threads(1)
EST = EstimatorConfig(in_channels=4, context_dim=16, hidden_size=32, num_heads=2, depth=1, max_len=32,
                      latents_per_frame=4)


def _objective():
    torch.manual_seed(0)
    return CFMObjective(ChannelConcatDiT(EST), CondEncoder(CondConfig(origin_dim=8, embed_dim=16)))


def _batches(step, gen):
    return {"feats": torch.randn(2, 4, 8, generator=gen), "x1": torch.randn(2, 4, 16, generator=gen)}


CFG = TrainConfig(steps=6, batch_size=2, lr=1e-3, warmup_steps=4, ema_decay=0.9, ckpt_every=3, log_every=1,
                  grad_clip=1.0, seed=5)


def test_resume_restores_step_and_optimizer(tmp_path):
    straight = Trainer("t", _objective(), _batches, tmp_path / "a", CFG, progress=False)
    ra = straight.run()
    assert ra.steps == 6

    first = Trainer("t", _objective(), _batches, tmp_path / "b", dataclasses.replace(CFG, steps=3), progress=False)
    first.run()
    resumed = Trainer("t", _objective(), _batches, tmp_path / "b", CFG, progress=False)
    assert resumed.try_resume() and resumed.step == 3
    assert resumed.scheduler.last_epoch == 3
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 3
    rb = resumed.run(resume=False)  # already resumed above
    assert rb.steps == 6

    for (k, va), vb in zip(straight.objective.state_dict().items(), resumed.objective.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k
    assert straight.ema.updates == resumed.ema.updates == 6
    for k in straight.ema.shadow:
        assert torch.allclose(straight.ema.shadow[k], resumed.ema.shadow[k], atol=1e-6), k
    sa = straight.optimizer.state_dict()["state"]
    sb = resumed.optimizer.state_dict()["state"]
    assert all(torch.allclose(sa[i]["exp_avg"], sb[i]["exp_avg"], atol=1e-6) for i in sa)

    fin = load_final(tmp_path / "b")
    assert fin["result"]["steps"] == 6 and "loss" in fin["result"]["losses"]
    exported = fin["state"]
    assert all(torch.equal(exported[k], resumed.ema.shadow[k]) for k in exported)  # EMA is what is exported
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_single_process_without_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = setup("cpu")
    assert ctx == DistContext() and ctx.is_main and not ctx.distributed and ctx.shard(32) == 32


def test_cosine_decay_reaches_the_final_factor_after_warm_up(tmp_path):
    cfg = dataclasses.replace(CFG, steps=12, warmup_steps=2, final_lr_factor=0.1, ema_decay=0.0)
    trainer = Trainer("t", _objective(), _batches, tmp_path, cfg, progress=False)
    lrs = []
    for _ in range(cfg.steps + 1):
        lrs.append(trainer.scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
    assert lrs[0] < lrs[1] < lrs[2] == cfg.lr                    # linear warm-up
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))          # then never rises
    assert abs(lrs[cfg.steps] - 0.1 * cfg.lr) < 1e-9              # ends at lr * final_lr_factor
    flat = Trainer("t", _objective(), _batches, tmp_path / "flat", dataclasses.replace(cfg, final_lr_factor=1.0),
                   progress=False)
    assert flat.scheduler.lr_lambdas[0](cfg.steps) == 1.0        # default: constant after warm-up


def test_a_decay_tail_holds_the_lr_then_decays_over_its_last_steps_and_extends_a_finished_run(tmp_path):
    cfg = dataclasses.replace(CFG, steps=6, warmup_steps=2, ema_decay=0.0, ckpt_every=6)
    Trainer("t", _objective(), _batches, tmp_path, cfg, progress=False).run()   # a constant-LR run
    longer = dataclasses.replace(cfg, steps=14, final_lr_factor=0.05, decay_steps=4)
    trainer = Trainer("t", _objective(), _batches, tmp_path, longer, progress=False)
    assert trainer.try_resume() and trainer.step == 6
    lrs = {}
    while trainer.step < longer.steps:
        lrs[trainer.step] = trainer.optimizer.param_groups[0]["lr"]       # the LR this step trains with
        trainer.train_step()
    lrs[longer.steps] = trainer.scheduler.get_last_lr()[0]
    assert all(lrs[s] == longer.lr for s in range(6, 11))                 # held until 4 steps before the end
    assert all(lrs[s] > lrs[s + 1] for s in range(10, 14))                # then decays every step
    assert abs(lrs[14] - 0.05 * longer.lr) < 1e-12                        # to lr * final_lr_factor
    whole = Trainer("t", _objective(), _batches, tmp_path / "whole",
                    dataclasses.replace(longer, decay_steps=0), progress=False)
    assert whole.scheduler.lr_lambdas[0](6) < 1.0                         # without it: decays from warm-up on


def test_resuming_a_run_without_ema_with_ema_starts_the_average_from_the_resumed_weights(tmp_path):
    cfg = dataclasses.replace(CFG, steps=4, ema_decay=0.0, ckpt_every=4)
    Trainer("t", _objective(), _batches, tmp_path, cfg, progress=False).run()    # no EMA in its checkpoint
    with_ema = dataclasses.replace(cfg, steps=7, ema_decay=0.99)
    trainer = Trainer("t", _objective(), _batches, tmp_path, with_ema, progress=False)
    assert trainer.try_resume() and trainer.step == 4
    live = {k: v.clone() for k, v in trainer.objective.state_dict().items()}
    assert all(torch.equal(trainer.export_state()[k], live[k]) for k in live)   # not the initial weights
    trainer.run(resume=False)
    exported, now = load_final(tmp_path)["state"], trainer.objective.state_dict()
    moved = [k for k in live if live[k].is_floating_point() and not torch.equal(live[k], now[k])]
    assert moved
    for k in moved:   # the average is neither the resumed nor the last weights
        assert not torch.equal(exported[k], now[k]) and not torch.equal(exported[k], live[k])


def test_a_resumed_run_averages_with_the_decay_it_is_given_now(tmp_path):
    cfg = dataclasses.replace(CFG, steps=3, ema_decay=0.9, ckpt_every=3)
    Trainer("t", _objective(), _batches, tmp_path, cfg, progress=False).run()
    trainer = Trainer("t", _objective(), _batches, tmp_path, dataclasses.replace(cfg, steps=5, ema_decay=0.5),
                      progress=False)
    assert trainer.try_resume() and trainer.ema.updates == 3 and trainer.ema.decay == 0.5


def test_bf16_autocasts_the_forward_pass_and_keeps_float32_weights(tmp_path):
    """``TrainConfig.bf16``: the objective's matrix products run in bfloat16 (other losses than float32's,
    reproducibly), while the weights, the optimiser state and the exported weights stay float32."""
    cfg = dataclasses.replace(CFG, steps=3, ema_decay=0.0)
    fp32 = Trainer("t", _objective(), _batches, tmp_path / "fp32", cfg, progress=False).run()
    runs = [Trainer("t", _objective(), _batches, tmp_path / name, dataclasses.replace(cfg, bf16=True), progress=False)
            for name in ("a", "b")]
    results = [t.run() for t in runs]
    assert results[0].losses == results[1].losses and results[0].losses != fp32.losses
    assert all(abs(results[0].losses[k] - fp32.losses[k]) < 0.05 * abs(fp32.losses[k]) + 1e-3 for k in fp32.losses)
    assert all(p.dtype == torch.float32 for p in runs[0].objective.parameters())
    assert all(v.dtype == torch.float32 for s in runs[0].optimizer.state_dict()["state"].values()
               for v in s.values() if v.is_floating_point() and v.dim() > 0)
    assert all(v.dtype == torch.float32 for v in load_final(tmp_path / "a")["state"].values() if v.is_floating_point())
