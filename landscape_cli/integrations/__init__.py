"""Callbacks that take SharpnessTracker into other trainers (optional extras: `[lightning]`, `[hf]`)."""
