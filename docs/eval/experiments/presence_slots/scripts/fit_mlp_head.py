"""Fit a causal MLP slot head (frames t-1, t) on the frozen CAVP features of the ps4 run; choose its threshold on validation clips."""
import sys, json, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from frieren.checkpoints import load_bundle
from frieren.training.presence import onset_slot_labels, choose_threshold, slot_onsets
from frieren.eval.table import render_clips
torch.set_num_threads(1)
RUN, BUNDLE, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
HID = int(sys.argv[4]) if len(sys.argv) > 4 else 128
from cavp_probe import cavp_encoder
from frieren.config import get_preset, with_subframes
p = with_subframes(get_preset("tiny"), 4); g = p.geometry; S = 4; D = p.cavp.embed_dim
enc = cavp_encoder(f"{RUN}/cavp/final.pt", p)
ons = json.load(open(f"{RUN}/cache/onsets.json"))["onsets"]
feats, labels = [], []
for i in range(600):
    f = torch.load(f"{RUN}/cache/latents/{i:05d}.pt")["feats"][:, :D]
    key = torch.load(f"{RUN}/cache/clips/{i:05d}.pt")["key"]
    feats.append(f); labels.append(onset_slot_labels(ons[key], len(f), g.samples_per_frame, S, g.sample_rate))
def causal(f): return torch.cat([F.pad(f[:-1], (0, 0, 1, 0)), f], 1)
X = torch.cat([causal(f) for f in feats]); Y = torch.cat(labels)
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(2 * D, HID), torch.nn.GELU(), torch.nn.Linear(HID, S))
opt = torch.optim.Adam(m.parameters(), 3e-3, weight_decay=1e-4)
for step in range(800):
    opt.zero_grad(); l = F.binary_cross_entropy_with_logits(m(X), Y); l.backward(); opt.step()
print("train loss", float(l))
m.eval()
val = render_clips(list(range(800000, 800048)), 8.0, p)
with torch.no_grad():
    lg = [m(causal(enc.extract(c.frames))).numpy() for c in val]
t, s = choose_threshold(lg, [c.onsets for c in val], g.samples_per_frame, g.sample_rate)
print("threshold", t, s)
torch.save({"state": m.state_dict(), "threshold": t, "scores": s, "hidden": HID}, OUT)
