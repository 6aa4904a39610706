"""Copy a bundle with its presence threshold replaced (experiment helper, not the product's)."""
import json, shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
from frieren.checkpoints import sha256_file
src, dst, thr = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
shutil.rmtree(dst, ignore_errors=True); dst.mkdir(parents=True)
w = load_file(src / "model.safetensors")
keys = [k for k in w if k.endswith("presence_threshold")]
print("threshold keys", keys, [float(w[k]) for k in keys])
for k in keys: w[k].fill_(thr)
save_file(w, dst / "model.safetensors")
cfg = json.loads((src / "config.json").read_text()); cfg["weights_sha256"] = sha256_file(dst / "model.safetensors")
(dst / "config.json").write_text(json.dumps(cfg, indent=2))
