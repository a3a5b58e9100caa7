"""One error base for everything a user can cause, and its kinds (no torch, ray or mlflow imports).

Every error that bad input causes (a project file, data, a resource request, a plugin name, a
tracking store, a CLI argument) is a :class:`DlopsError`; the CLI maps it to one line on stderr
and its :attr:`~DlopsError.exit_code` in one place (:func:`dlops.cli.main`). Each kind also
subclasses the builtin it used to be (``ValueError`` for bad input, ``RuntimeError`` for a search
that failed as a whole), so ``except ValueError`` in user code keeps working.

Exit codes (the CLI's): 2 bad input, nothing was started or every open run was ended;
1 a search that ran and failed as a whole (the failure budget, nothing to register), or a
promotion the gate refused (``dlops promote``, ``dlops ensemble``: nothing was moved).
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_SEARCH_FAILED = 1
EXIT_GATE_REFUSED = 1


class DlopsError(Exception):
    """Base of every dlops error a user can cause. ``str(error)`` is the one line the CLI prints.

    Attributes:
        kind: a short name of the kind (``config``, ``data``, ...).
        exit_code: the CLI's exit code for it (2 bad input; 1 a search that failed).
    """

    kind = "error"
    exit_code = EXIT_BAD_INPUT


class ConfigError(DlopsError, ValueError):
    """A bad project file or override. The message names the file, the key and the value."""

    kind = "config"


class DataError(DlopsError, ValueError):
    """The data cannot be used; the message names the file or folder."""

    kind = "data"


class PluginError(DlopsError, ValueError):
    """A plugin could not be loaded, has the wrong shape, or a name no plugin provides."""

    kind = "plugin"


class ResourceError(DlopsError, ValueError):
    """The cluster cannot meet a trial's resource request (checked before any run is created)."""

    kind = "resources"


class ClusterError(DlopsError, ValueError):
    """The Ray cluster at the given address cannot be reached or refuses this client."""

    kind = "cluster"


class TrackingError(DlopsError, ValueError):
    """The tracking store cannot be used (found before anything starts)."""

    kind = "tracking"


class NothingToResumeError(DlopsError, ValueError):
    """``--resume`` found no unfinished search of the experiment."""

    kind = "resume"


class ReportTargetError(DlopsError, ValueError):
    """The run or model named for ``dlops report`` cannot be reported on."""

    kind = "report"


class ServeError(DlopsError, ValueError):
    """Bad input to ``dlops serve``."""

    kind = "serve"


class SubmitError(DlopsError, ValueError):
    """Bad input to ``dlops submit``; nothing was submitted."""

    kind = "submit"


class SearchFailedError(DlopsError, RuntimeError):
    """A search that ran and failed as a whole (CLI exit code 1); its runs ended FAILED."""

    kind = "search"
    exit_code = EXIT_SEARCH_FAILED


class TooManyFailuresError(SearchFailedError):
    """More than ``search.max_failures`` trials failed; the search was stopped."""


class NothingToRegisterError(SearchFailedError):
    """No trial finished with a finite optimizing metric while meeting the satisficing
    constraints: there is no model to register."""


__all__ = [
    "DlopsError", "ConfigError", "DataError", "PluginError", "ResourceError", "ClusterError", "TrackingError",
    "NothingToResumeError", "ReportTargetError", "ServeError", "SubmitError", "SearchFailedError",
    "TooManyFailuresError", "NothingToRegisterError", "EXIT_BAD_INPUT", "EXIT_SEARCH_FAILED",
]


class RegistryError(DlopsError, ValueError):
    """Bad input to a registry command: an unknown model, version or alias, a version of another
    model, nothing to roll back to. The message names it; nothing in the registry was changed."""

    kind = "registry"


class GateRefusedError(DlopsError):
    """The promotion gate refused the move (CLI exit code 1); the message is the gate's reason.
    Nothing in the registry was changed."""

    kind = "gate"
    exit_code = EXIT_GATE_REFUSED


__all__ += ["RegistryError", "GateRefusedError", "EXIT_GATE_REFUSED"]
