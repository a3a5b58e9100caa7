"""Built-in ensemble methods (``dlops_ensemble_methods``): :mod:`.average`. The registered
ensemble model and test-time augmentation are the core's (:mod:`dlops.ensemble`, :mod:`dlops.predict`)."""
