"""The face pipeline: detect, align to the 512x512 template, restore in batches, paste back.

Every stage is a function on tensors that runs without ComfyUI.
"""
