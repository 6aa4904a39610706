import numpy as np, sys
from frieren.config import get_preset
from frieren.synth import SceneConfig, render_clip
from frieren.eval.sync import match, merge_close_events
p = get_preset("tiny"); g = p.geometry
spf, sr = g.samples_per_frame, g.sample_rate
slots = 4; sps = spf // slots
scene = SceneConfig(duration_s=8.0, sample_rate=sr)
res = {}
def add(name, det, ref):
    for tol in (45, 125):
        s = match(det, ref, sr, tol)
        a = res.setdefault((name, tol), [0, 0, 0]); a[0] += s.matched; a[1] += s.detected; a[2] += s.events
for seed in range(800000, 800048):
    clip = render_clip(seed, scene)
    ev = clip.events
    ref = merge_close_events([e.sample for e in ev if e.kind in ("impact", "continuous_start")], sr)
    imp = [e.sample for e in ev if e.kind == "impact"]
    allon = [e.sample for e in ev if e.kind in ("impact", "continuous_start")]
    for name, src in (("impact", imp), ("impact+cont", allon)):
        fr = sorted(set(s // spf for s in src))
        add(f"frame {name}", [f * spf + spf // 2 for f in fr], ref)
        sl = sorted(set(s // sps for s in src))
        add(f"slot {name}", [f * sps + sps // 2 for f in sl], ref)
        # count per frame, evenly placed
        from collections import Counter
        c = Counter(s // spf for s in merge_close_events(src, sr))
        add(f"count {name}", sorted(f * spf + int((k + 0.5) * spf / n) for f, n in c.items() for k in range(n)), ref)
for (name, tol), (m, d, e) in sorted(res.items()):
    P, R = m / d, m / e
    print(f"{name:22s} ±{tol}: F1 {2*P*R/(P+R):.3f} P {P:.3f} R {R:.3f}")
