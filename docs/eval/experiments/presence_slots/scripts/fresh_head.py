"""Slot heads fitted on CAVP features of clips the CAVP never saw vs of its training clips."""
import sys, json, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from cavp_probe import cavp_encoder
from frieren.config import get_preset, with_subframes
from frieren.eval.table import render_clips
from frieren.training.presence import onset_slot_labels, choose_threshold
from concurrent.futures import ProcessPoolExecutor
torch.set_num_threads(1)
RUN = sys.argv[1]; NF = int(sys.argv[2])
p = with_subframes(get_preset("tiny"), 4); g = p.geometry; S = 4; D = 128
enc = cavp_encoder(f"{RUN}/cavp/final.pt", p)
def feats_of(seeds):
    torch.set_num_threads(1)
    cl = render_clips(seeds, 8.0, p)
    with torch.no_grad():
        return [(enc.extract(c.frames), onset_slot_labels(c.onsets, c.frames.shape[0], g.samples_per_frame, S, g.sample_rate)) for c in cl]
chunks = [list(range(s, s + 25)) for s in range(700000, 700000 + NF, 25)]
with ProcessPoolExecutor(2) as ex:
    fresh = [x for part in ex.map(feats_of, chunks) for x in part]
torch.save(fresh, f"/tmp/scratch/fresh_feats_{NF}.pt")
ons = json.load(open(f"{RUN}/cache/onsets.json"))["onsets"]
train = []
for i in range(600):
    f = torch.load(f"{RUN}/cache/latents/{i:05d}.pt")["feats"][:, :D]
    key = torch.load(f"{RUN}/cache/clips/{i:05d}.pt")["key"]
    train.append((f, onset_slot_labels(ons[key], len(f), g.samples_per_frame, S, g.sample_rate)))
val = render_clips(list(range(800000, 800048)), 8.0, p)
with torch.no_grad(): vf = [enc.extract(c.frames) for c in val]
def causal(f): return torch.cat([F.pad(f[:-1], (0, 0, 1, 0)), f], 1)
def fit(data, ctx, hidden, steps, lr):
    X = torch.cat([causal(f) if ctx else f for f, _ in data]); Y = torch.cat([y for _, y in data])
    torch.manual_seed(0)
    m = torch.nn.Linear(X.shape[1], S) if not hidden else torch.nn.Sequential(torch.nn.Linear(X.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, S))
    opt = torch.optim.Adam(m.parameters(), lr, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad(); F.binary_cross_entropy_with_logits(m(X), Y).backward(); opt.step()
    m.eval()
    with torch.no_grad(): lg = [m(causal(f) if ctx else f).numpy() for f in vf]
    return choose_threshold(lg, [c.onsets for c in val], g.samples_per_frame, g.sample_rate)
for name, data in (("train", train), ("fresh", fresh), ("train+fresh", train + fresh)):
    for ctx, hidden, steps, lr in ((False, 0, 600, 1e-2), (True, 0, 600, 1e-2), (True, 128, 800, 3e-3), (True, 256, 1500, 3e-3)):
        t, s = fit(data, ctx, hidden, steps, lr)
        print(f"{name:12s} ctx {int(ctx)} hidden {hidden:3d}: thr {t:+.1f} F1 {s['f1']:.3f} P {s['precision']:.3f} R {s['recall']:.3f}", flush=True)
