"""The engine station: the denoising loop, the guidance phase, attention capture, sampling
settings, the device runtime and per-run state."""
