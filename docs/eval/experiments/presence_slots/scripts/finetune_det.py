"""Fine-tune a copy of the CAVP video branch as a slot presence detector; score it as a detector on validation clips."""
import sys, json, time, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from cavp_probe import cavp_encoder
from frieren.config import get_preset, with_subframes
from frieren.eval.table import render_clips
from frieren.training.presence import onset_slot_labels, choose_threshold
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
RUN, STEPS, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
p = with_subframes(get_preset("tiny"), 4); g = p.geometry; S = 4; D = 128
enc = cavp_encoder(f"{RUN}/cavp/final.pt", p)
head = torch.nn.Linear(D, S)
fitted = torch.load(f"{RUN}/cavp/presence_slot_head.pt")["state"]; head.load_state_dict(fitted)
ons = json.load(open(f"{RUN}/cache/onsets.json"))["onsets"]
clips = []
for i in range(600):
    c = torch.load(f"{RUN}/cache/clips/{i:05d}.pt")
    clips.append((c["frames"], onset_slot_labels(ons[c["key"]], c["frames"].shape[0], g.samples_per_frame, S, g.sample_rate)))
val = render_clips(list(range(800000, 800048)), 8.0, p)
def score():
    enc.eval()
    with torch.no_grad():
        lg = [head(enc.extract(c.frames)).numpy() for c in val]
    return choose_threshold(lg, [c.onsets for c in val], g.samples_per_frame, g.sample_rate)
import os
if os.environ.get("INIT"):
    d0 = torch.load(os.environ["INIT"]); enc.load_state_dict(d0["video"]); head.load_state_dict(d0["head"])
print("before", score(), flush=True)
opt = torch.optim.Adam([{"params": enc.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}])
gen = torch.Generator().manual_seed(int(os.environ.get("SEED", 0)))
B, W = 8, 16
t0 = time.time()
for step in range(1, STEPS + 1):
    enc.train()
    xs, ys = [], []
    for _ in range(B):
        ci = int(torch.randint(len(clips), (1,), generator=gen)); fr, y = clips[ci]
        s = int(torch.randint(fr.shape[0] - W + 1, (1,), generator=gen))
        x = fr[s:s + W].float() / 255.0
        if torch.rand(1, generator=gen) < 0.5: x = x.flip(-1)
        xs.append(x); ys.append(y[s:s + W])
    x = torch.stack(xs); y = torch.stack(ys)
    logit = head(enc(x, normalize=True))
    loss = F.binary_cross_entropy_with_logits(logit, y)
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 100 == 0: print(step, float(loss), f"{time.time() - t0:.0f}s", flush=True)
    if step % 500 == 0 or step == STEPS:
        print("step", step, score(), flush=True)
torch.save({"video": enc.state_dict(), "head": head.state_dict()}, OUT)
