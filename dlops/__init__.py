"""dlops: plugin-based MLOps for deep-learning projects.

The hook markers are re-exported here so that a plugin writes::

    from dlops import hookimpl

    @hookimpl
    def dlops_reporters():
        return {"my_reporter": MyReporter()}
"""

from dlops.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec", "__version__"]
__version__ = "0.1.0"
