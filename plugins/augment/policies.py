"""Built-in augmentation policies (albumentations). Filled in by the augmentation work."""

from __future__ import annotations

from dlops import hookimpl


@hookimpl
def dlops_augment_policies() -> dict[str, object]:
    return {}
