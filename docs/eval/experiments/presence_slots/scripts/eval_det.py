"""frieren eval with a slot bundle's presence channel taken from a fine-tuned detector network (finetune_det.py)."""
import sys, dataclasses, torch
sys.path.insert(0, "benchmarks")
from frieren.eval_cli import main
from frieren.models.cavp import CAVPVideoEncoder
from frieren.config import get_preset, with_subframes
DET, THR = sys.argv[1], float(sys.argv[2])
d = torch.load(DET)
p = with_subframes(get_preset("tiny"), 4)
det = CAVPVideoEncoder(dataclasses.replace(p.cavp, presence_channel=False)); det.load_state_dict(d["video"]); det.eval()
head = torch.nn.Linear(p.cavp.embed_dim, 4); head.load_state_dict(d["head"]); head.eval()
def extract_condition(self, frames, chunk_frames=None):
    feats = self.extract(frames, chunk_frames)
    said = (head(det.extract(frames, chunk_frames)) > THR).to(feats.dtype)
    return torch.cat([feats, said], -1)
CAVPVideoEncoder.extract_condition = torch.no_grad()(extract_condition)
sys.exit(main(sys.argv[3:]))
