"""The errors that mean "bad input from the user": the CLI prints them as one line, no traceback."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    from .data import DataError
    from .pipeline import ModelLoadError, RunFolderError
    from .recipe import RecipeError
    from .surgery import UnsupportedModelError
    from .train import NonFiniteLossError

    found = [DataError, ModelLoadError, RunFolderError, RecipeError, UnsupportedModelError, NonFiniteLossError,
             FileNotFoundError]
    try:
        from .packed import PackedFormatError

        found.append(PackedFormatError)
    except ImportError:  # the packed format is optional at import time (its kernels compile lazily)
        pass
    # ValueError last: our own checks (layers, bits, groups) raise it with a message meant for users
    return tuple(found) + (ValueError,)
