"""Augmentation policies: albumentations (:mod:`.policies`: ``none``, ``flip``, ``crop``,
``standard``, ``heavy``) and torchvision.transforms.v2 (:mod:`.tv2`: ``tv2_*``); shared policy
object, seeding and description helpers in :mod:`.common`."""
