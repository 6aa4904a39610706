"""The synthetic Foley world: procedural scenes with synchronized 16 kHz audio and ground truth.

Nobody here can download the official weights, so the project trains its own small model on
this world. Objects of several materials fall, bounce, collide and slide (2-D circle physics);
a fan hums at a pitch that follows its visible rotation; quiet segments leave true silence.

    clip = render_clip(seed, SceneConfig(duration_s=8.0))     # offline clip
    for frame_index, rgb, audio, events in LiveScene(seed):   # endless live source
        ...
    write_dataset("data/synth", 100, seed0=0, split="train")  # mp4 + wav + events.json
"""
from .config import EVENT_KINDS, Event, SceneConfig
from .dataset import write_dataset, write_mp4, write_wav
from .live import LiveFrame, LiveScene
from .materials import FAN, MATERIALS, FanSound, Material, get_material
from .physics import Body, Fan, World
from .render import Renderer
from .scene import Clip, Director, Scene, SceneStep, render_clip
from .sound import Synth, impact_waveform

__all__ = [
    "EVENT_KINDS", "Event", "SceneConfig", "write_dataset", "write_mp4", "write_wav",
    "LiveFrame", "LiveScene", "FAN", "MATERIALS", "FanSound", "Material", "get_material",
    "Body", "Fan", "World", "Renderer", "Clip", "Director", "Scene", "SceneStep", "render_clip",
    "Synth", "impact_waveform",
]
