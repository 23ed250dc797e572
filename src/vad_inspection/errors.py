"""The package's error root, split by what a running node should do about an error.

Every error the package raises on purpose derives from :class:`VadError`, and from exactly one of
its two roles:

- :class:`FrameError`: *this input is bad* (a corrupt image, an unknown encoding, NaN depth, a
  transform too old for this frame). A node logs it once per cause, counts it, drops the input
  and keeps running.
- :class:`SetupError`: *this node cannot run as configured* (a missing or corrupt model file, a
  backbone that cannot be exported, a bad parameter). A node refuses the lifecycle transition
  that needed it and stays where it was; a command line exits with the message.

The role classes also derive from the built-in exception a caller would naturally catch
(``ValueError`` / ``RuntimeError``), so code written against the older per-module errors keeps
working.
"""

from __future__ import annotations


class VadError(Exception):
    """Root of every error vad_inspection raises on purpose."""


class FrameError(VadError, ValueError):
    """One input (frame, message, sample) cannot be used; the next one may be fine."""


class SetupError(VadError, RuntimeError):
    """The configuration, a model file or the environment stops a node or command from running."""
