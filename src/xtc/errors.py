"""Every error a user can cause, under one base class.

``XTCError`` means "the input was wrong, and the message says which input and what would fix it":
the CLI prints it as one ``error:`` line and exits with code 2. Anything else that escapes is a bug
in xtc and keeps its traceback. The subclasses also derive from ``ValueError`` so that code written
against earlier versions (``except ValueError``) keeps working.

This module imports nothing from the package, so every module can raise these without a cycle.
"""

from __future__ import annotations


class XTCError(Exception):
    """A problem with the user's input (files, options, models, data); the message names it."""


class ConfigError(XTCError, ValueError):
    """An option or configuration value out of its range or of the wrong kind."""


class InputError(XTCError, ValueError):
    """Input text, files or folders that cannot be used as given."""


class DataError(XTCError, ValueError):
    """A dataset that cannot be read: missing file, malformed row, unknown label."""


class RecipeError(XTCError, ValueError):
    """A recipe (YAML) with an unknown key or a value of the wrong kind."""


class ModelLoadError(XTCError, ValueError):
    """A model or tokenizer that cannot be loaded from the name or folder given."""


class UnsupportedModelError(XTCError, ValueError):
    """A model whose structure xtc cannot find (no encoder blocks, no attention modules)."""


class RunFolderError(XTCError, ValueError):
    """An output folder that cannot be used: unfinished, finished, not writable."""


class PackedFormatError(XTCError, ValueError):
    """A packed file that cannot be read safely (one-line message, names the file)."""


class NonFiniteLossError(XTCError, RuntimeError):
    """Training diverged (NaN or infinite loss); the last good checkpoint is kept."""
