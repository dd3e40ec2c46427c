"""The training harness beside core (as open_clip's training is beside open_clip):
feature cache, loss, augmentation, the trainer (torchrun / DDP), evaluation, retraining."""
