"""frieren eval with a bundle's slot presence head replaced by the causal MLP head of fit_mlp_head.py."""
import sys, torch, torch.nn.functional as F
from frieren.eval_cli import main
from frieren.models.cavp import CAVPVideoEncoder
HEAD = sys.argv[1]
d = torch.load(HEAD)
S = d["state"]["2.weight"].shape[0]; D = d["state"]["0.weight"].shape[1] // 2
m = torch.nn.Sequential(torch.nn.Linear(2 * D, d["hidden"]), torch.nn.GELU(), torch.nn.Linear(d["hidden"], S))
m.load_state_dict(d["state"]); m.eval()
def presence_logits(self, feats):
    prev = torch.cat([torch.zeros_like(feats[..., :1, :]), feats[..., :-1, :]], -2)
    return m(torch.cat([prev, feats], -1))
CAVPVideoEncoder.presence_logits = presence_logits
orig = CAVPVideoEncoder._with_presence
def _with_presence(self, feats):
    self.presence_threshold.fill_(d["threshold"])
    return orig(self, feats)
CAVPVideoEncoder._with_presence = _with_presence
sys.exit(main(sys.argv[2:]))
