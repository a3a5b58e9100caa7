"""Augmentation policies: albumentations (:mod:`.policies`: ``none``, ``flip``, ``crop``,
``standard``, ``heavy``) and torchvision.transforms.v2 (:mod:`.tv2`: ``tv2_*``); the policy
contract (policy object, seeding, description) is the core's: :mod:`dlops.data.policy`."""
