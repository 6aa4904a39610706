"""Can a linear head on frozen CAVP features say in which 32 ms slot onsets start? Detector F1 on validation clips."""
import sys, json, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "benchmarks")
from cavp_probe import cavp_encoder, load_stage_state
from frieren.config import get_preset, with_subframes
from frieren.synth import SceneConfig, render_clip
from frieren.eval.sync import match, merge_close_events
from frieren.eval.table import render_clips
from concurrent.futures import ProcessPoolExecutor
torch.set_num_threads(1)
RUN = sys.argv[1]; CK = f"{RUN}/cavp/final.pt"
p = with_subframes(get_preset("tiny"), 4); g = p.geometry
spf, sr = g.samples_per_frame, g.sample_rate; S = 4; sps = spf // S
KINDS = ("impact", "continuous_start")
def slot_labels(events, n):
    y = np.zeros((n, S), np.float32); cnt = np.zeros(n, np.int64)
    for s in merge_close_events([e.sample for e in events if e.kind in KINDS], sr):
        i = s // sps
        if i < n * S: y[i // S, i % S] = 1; cnt[i // S] += 1
    imp = np.zeros(n, np.float32)
    for e in events:
        if e.kind == "impact" and e.sample // spf < n: imp[e.sample // spf] = 1
    return y, cnt, imp
def events_of(seed):
    return render_clip(seed, SceneConfig(duration_s=8.0, sample_rate=sr)).events
feats = [torch.load(f"{RUN}/cache/latents/{i:05d}.pt")["feats"] for i in range(600)]
with ProcessPoolExecutor(2) as ex: evs = list(ex.map(events_of, range(1000, 1600), chunksize=20))
Ytr = [slot_labels(e, len(f)) for e, f in zip(evs, feats)]
X = torch.cat(feats); Y = torch.from_numpy(np.concatenate([y[0] for y in Ytr])); C = torch.from_numpy(np.concatenate([y[1] for y in Ytr])).clamp(max=2)
print("train frames", X.shape, "slot pos rate", Y.mean().item(), "count dist", torch.bincount(C).tolist(), flush=True)
def nb(x):  # neighbours: t-1, t, t+1 (clip-wise)
    return torch.cat([F.pad(x[:-1], (0, 0, 1, 0)), x, F.pad(x[1:], (0, 0, 0, 1))], 1)
Xn = torch.cat([nb(f) for f in feats])
def fit(x, y, out, loss, steps=600, hidden=0):
    torch.manual_seed(0)
    m = torch.nn.Linear(x.shape[1], out) if not hidden else torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, out))
    opt = torch.optim.Adam(m.parameters(), 1e-2 if not hidden else 3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad(); l = loss(m(x), y); l.backward(); opt.step()
    return m.eval()
heads = {
 "slot lin": (False, fit(X, Y, S, F.binary_cross_entropy_with_logits)),
 "slot lin nb": (True, fit(Xn, Y, S, F.binary_cross_entropy_with_logits)),
 "slot mlp nb": (True, fit(Xn, Y, S, F.binary_cross_entropy_with_logits, steps=1500, hidden=256)),
 "count lin": (False, fit(X, C, 3, F.cross_entropy)),
 "count mlp nb": (True, fit(Xn, C, 3, F.cross_entropy, steps=1500, hidden=256)),
}
enc = cavp_encoder(CK, p); st = load_stage_state(CK)
pw = st.get("presence_head.weight"); pb = st.get("presence_head.bias")
val = render_clips(list(range(800000, 800048)), 8.0, p)
with torch.no_grad(): vf = [enc.extract(c.frames) for c in val]
refs = [merge_close_events(c.onsets, sr) for c in val]
def score(dets):
    out = {}
    for tol in (45, 125):
        m = d = e = 0
        for det, ref in zip(dets, refs):
            s = match(det, ref, sr, tol); m += s.matched; d += s.detected; e += s.events
        P, R = m / max(d, 1), m / max(e, 1); out[tol] = (2 * P * R / max(P + R, 1e-9), P, R)
    return out
def nms(idx_scores, unit):  # (position sample, score) -> merged within 50 ms, strongest first
    kept = []
    for pos, sc in sorted(idx_scores, key=lambda t: -t[1]):
        if all(abs(pos - k) >= 0.05 * sr for k in kept): kept.append(pos)
    return sorted(kept)
res = {}
def best(name, make):
    b = None
    for t in np.linspace(-3, 3, 31):
        s = score([make(i, t) for i in range(len(val))])
        if b is None or s[125][0] > b[1][125][0]: b = (t, s)
    res[name] = b; t, s = b
    print(f"{name:16s} thr {t:+.1f}  ±125 F1 {s[125][0]:.3f} (P {s[125][1]:.3f} R {s[125][2]:.3f})  ±45 F1 {s[45][0]:.3f}", flush=True)
if pw is not None:
    pl = [(f @ pw.T + pb)[:, 0].numpy() for f in vf]
    best("frame presence", lambda i, t: list(np.flatnonzero(pl[i] > t) * spf + spf // 2))
with torch.no_grad():
    for name, (usenb, h) in heads.items():
        o = [h(nb(f) if usenb else f).numpy() for f in vf]
        if name.startswith("slot"):
            best(name, lambda i, t: nms([(k * sps + sps // 2, o[i].reshape(-1)[k]) for k in np.flatnonzero(o[i].reshape(-1) > t)], sps))
        else:
            def mk(i, t, o=o):
                lp = torch.log_softmax(torch.from_numpy(o[i]), -1).numpy()
                det = []
                for fr in range(len(lp)):
                    n = 0 if lp[fr, 0] > np.log(1 / (1 + np.exp(-t))) else (2 if lp[fr, 2] > lp[fr, 1] else 1)
                    det += [fr * spf + int((k + 0.5) * spf / n) for k in range(n)]
                return det
            best(name, mk)
# truth references
yv = [slot_labels(c.events, len(f)) for c, f in zip(val, vf)]
print("truth slot", score([nms([(k * sps + sps // 2, 1) for k in np.flatnonzero(y[0].reshape(-1))], sps) for y in yv]))
print("truth count", score([[fr * spf + int((k + 0.5) * spf / n) for fr, n in enumerate(np.minimum(y[1], 2)) for k in range(n)] for y in yv]))
