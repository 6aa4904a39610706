"""frieren eval with the bundle's presence threshold replaced."""
import sys
from frieren.eval_cli import main
from frieren.models.cavp import CAVPVideoEncoder
T = float(sys.argv[1])
orig = CAVPVideoEncoder._with_presence
def _with_presence(self, feats):
    self.presence_threshold.fill_(T)
    return orig(self, feats)
CAVPVideoEncoder._with_presence = _with_presence
sys.exit(main(sys.argv[2:]))
