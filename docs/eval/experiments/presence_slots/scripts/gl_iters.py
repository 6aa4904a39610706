import sys, numpy as np, torch, time
from frieren.config import get_preset
from frieren.audio import MelFrontend
from frieren.models.griffinlim import GriffinLimVocoder
from frieren.synth import SceneConfig, render_clip
from frieren.eval.sync import match, merge_close_events, detect_onsets
torch.set_num_threads(1)
p = get_preset("tiny"); sr = p.geometry.sample_rate
fe = MelFrontend(p.mel).eval()
clips = [render_clip(s, SceneConfig(duration_s=8.0, sample_rate=sr)) for s in range(900000, 900032)]
refs = [merge_close_events([e.sample for e in c.events if e.kind in ("impact", "continuous_start")], sr) for c in clips]
def score(audios, name, dt):
    out = []
    for tol in (45, 125):
        m = d = e = 0
        for a, r in zip(audios, refs):
            s = match(detect_onsets(a, sr), [x for x in r if x < len(a)], sr, tol); m += s.matched; d += s.detected; e += s.events
        P, R = m / d, m / e; out.append(f"±{tol} F1 {2*P*R/(P+R):.3f} P {P:.3f} R {R:.3f}")
    print(f"{name:28s} {'  '.join(out)}  {dt:.1f}s", flush=True)
score([c.audio for c in clips], "GT audio", 0)
mels = [fe(torch.from_numpy(c.audio)[None].float()) for c in clips]
for n_iter, mom, seed in [(32, 0.99, None), (64, 0.99, None), (128, 0.99, None), (32, 0.99, 0), (32, 0.0, None), (16, 0.99, None)]:
    voc = GriffinLimVocoder(p.mel, n_iter=n_iter, momentum=mom); voc.seed = seed
    t = time.time()
    with torch.no_grad(): aud = [voc(m)[0, 0].numpy() for m in mels]
    score(aud, f"GL iter {n_iter} mom {mom} seed {seed}", time.time() - t)
