"""Geometry's errors: both are *this input is bad* (:class:`~vad_inspection.errors.FrameError`).

A pixel whose ray misses the ground, a region without valid depth or a transform too old for a
frame says nothing about the next frame, so a node logs the reason, drops this one and goes on.
"""

from __future__ import annotations

from ..errors import FrameError


class GeometryError(FrameError):
    """A geometric computation has no answer for this input; the text says why."""


class TransformUnavailable(GeometryError):
    """A :class:`~vad_inspection.geometry.tf.TransformBuffer` cannot answer this lookup.

    The text names the reason: an unknown frame (with the frames it knows), two trees that are not
    connected (with both roots), or a time outside an edge's samples (with the edge and by how
    many milliseconds the tolerance is exceeded).
    """


class TransformNotYet(TransformUnavailable):
    """The lookup's time lies after the newest sample of an edge: the transform may still come
    (tf is often a frame behind the images), so a caller may wait for it, as tf2's message
    filter does, instead of dropping the input."""
