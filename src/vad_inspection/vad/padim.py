"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2020).

The paper's steps, in order:
1. Embedding extraction: the activations of three layers of a pretrained CNN (the finest grid
   first) are brought to the finest layer's grid and concatenated, giving one embedding vector
   x_ij per patch position (i, j) of the image.
2. Random dimensionality reduction: a fixed random subset of d of the embedding's channels is kept
   (the paper finds it as good as PCA and cheaper); d = 100 for ResNet18, 550 for WideResNet50.
3. Learning of the normality: at every patch position a multivariate Gaussian N(mu_ij, Sigma_ij)
   is fitted to the N training vectors, with the sample covariance regularised by epsilon * I
   (epsilon = 0.01) so that it stays invertible even with fewer images than dimensions.
4. Inference: the anomaly score of a test patch is its Mahalanobis distance
   M(x_ij) = sqrt((x_ij - mu_ij)^T Sigma_ij^-1 (x_ij - mu_ij)); the distances form the anomaly map,
   upsampled to the input size and Gaussian-smoothed (sigma 4); the image score is its maximum.

Fitting and scoring use ONNX Runtime and NumPy only. Where the paper is silent the numerics follow
anomalib 2.7 (``models/image/padim``), so that the same weights, channel subset and inputs give the
same numbers: deeper taps are upsampled with *nearest* interpolation before the channel subset is
taken; the covariance is the unbiased one (N - 1) plus 0.01 I, plus a further 1e-5 I stabiliser;
the distance map is upsampled *bilinearly* (align_corners=False) and blurred with a reflect-padded
Gaussian of width 2 * int(4 sigma + 0.5) + 1; the image score is the maximum of the blurred map.

The channel subset is drawn here with ``numpy.random.default_rng(seed).permutation`` (the first d
entries, in drawn order), the NumPy counterpart of anomalib 2.7's ``torch.randperm(D)[:d]``
(anomalib before 1.0 used Python's ``random.sample``). The generators differ, so the subsets
differ for the same seed: pass ``PaDiMConfig(channel_index=...)`` to impose another
implementation's subset.

Storage (``PaDiMConfig.storage``; not in the paper). At 256 px a MobileNetV2 PaDiM holds 4096
Gaussians of d = 100 dimensions: the packed float32 inverse covariances alone are 83 MB, against
the planetary paper's 10.7 MB model. ``"float32"`` keeps them as fitted (the default, and how
every file from before the option is read). ``"float16"`` stores the same packed inverse
covariances in half precision; ``"cholesky16"`` stores instead, in half precision, the upper
triangular factor R of each inverse covariance (R^T R = Sigma^-1, as many numbers), whose
distance ||R (x - mu)|| can never come out negative whatever the rounding, and which, where the
covariances are far from epsilon * I, loses less to the rounding than the packed inverse (whose
quadratic form then cancels). Both halve the stored matrices, in the file and in memory: the
half-precision numbers are kept as they are and widened to float32 inside the distance kernel,
which computes in float32 and runs about as fast as from float32 arrays (half the bytes to
read, one conversion per number). The mean stays float32 (2 / (d + 1) of the matrices' size).
Reaching the paper's footprint with those needs a smaller d (``n_features``): the file grows as
d^2, and which d channels are kept moves the ranking far more than the rounding does.
``"lowrank16"`` keeps d and approximates each inverse covariance instead: its ``rank`` (default 8)
directions of largest variance keep their own precision, the other d - rank share their mean
precision (``a I - V^T V``, :func:`low_rank_precision`), V in half precision: the file grows as
d * rank, 6.6 MB of V for d = 100, rank 8 at 256 px. The shared precision is exact where a
covariance's small eigenvalues sit at the regularisation floor epsilon, which is where most of
them sit with 200 training images and the d = 100 of the paper.
``benchmarks/padim_footprint.py`` measures sizes and what each setting costs in fidelity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from vad_inspection.progress import progress_bar
from vad_inspection.vad.artifact import Artifact
from vad_inspection.vad.backbones import get_spec
from vad_inspection.vad.base import Prediction
from vad_inspection.vad.features import FeatureExtractor
from vad_inspection.vad.ops import gaussian_blur, resize_bilinear, resize_nearest
from vad_inspection.vad.preprocess import InputError, InputSpec, as_hwc, to_network_input

#: The paper's reduced dimension d per backbone (anomalib's ``_N_FEATURES_DEFAULTS``); MobileNetV2,
#: which neither uses, gets the ResNet18 value.
N_FEATURES_DEFAULTS: dict[str, int] = {"resnet18": 100, "wide_resnet50_2": 550, "mobilenet_v2": 100}

#: Added on top of the regularisation by anomalib before inversion (multi_variate_gaussian.py).
STABILISER = 1e-5

#: Memory budget (bytes) of the float64 temporaries of one chunk of positions during fitting.
CHUNK_BYTES = 64 * 2**20

#: ``PaDiMConfig.storage`` choices: what the packed per-position matrices are and their dtype.
STORAGE_CHOICES: tuple[str, ...] = ("float32", "float16", "cholesky16", "lowrank16")

#: Name of the packed matrices in a model file, per storage.
_ARRAY_NAMES = {
    "float32": "precision_packed",
    "float16": "precision_packed",
    "cholesky16": "cholesky_packed",
    "lowrank16": "lowrank_basis",
}
#: The per-position isotropic precision of storage ``lowrank16`` in a model file.
_ISOTROPIC = "lowrank_isotropic"


def select_channels(total: int, n_features: int, seed: int) -> np.ndarray:
    """A random subset of ``n_features`` of ``total`` channel indices, in drawn order."""
    if not 0 < n_features <= total:
        raise ValueError(
            f"n_features must be in 1..{total} (the embedding's size); got {n_features}"
        )
    return np.random.default_rng(seed).permutation(total)[:n_features].astype(np.int64)


def gaussian_parameters(
    vectors: np.ndarray, regularisation: float, chunk: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(L, D)`` and inverse regularised covariance ``(L, D, D)``, both float32.

    ``vectors``: ``(L, N, D)``, the N training vectors at each of L positions. Computed in float64,
    ``chunk`` positions at a time (default: as many as fit in :data:`CHUNK_BYTES`), each chunk with
    one batched matrix product and one batched inversion -- no Python loop over positions.
    """
    positions, n, dim = vectors.shape
    if n < 2:
        raise InputError(f"a sample covariance needs at least two vectors per position; got {n}")
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // (8 * (2 * n * dim + 2 * dim * dim)))
    mean = np.empty((positions, dim), dtype=np.float32)
    inverse = np.empty((positions, dim, dim), dtype=np.float32)
    diagonal = np.arange(dim)
    for start in range(0, positions, chunk):
        x = vectors[start : start + chunk].astype(np.float64)  # (c, N, D)
        mu = x.mean(axis=1, keepdims=True)
        x -= mu
        covariance = np.matmul(x.transpose(0, 2, 1), x) / (n - 1)
        covariance[:, diagonal, diagonal] += regularisation
        covariance[:, diagonal, diagonal] += STABILISER
        mean[start : start + chunk] = mu[:, 0]
        inverse[start : start + chunk] = np.linalg.inv(covariance)
    return mean, inverse


def pack_precision(inverse: np.ndarray) -> np.ndarray:
    """The upper triangles ``(L, D(D+1)/2)`` of symmetric ``(L, D, D)`` matrices, row by row,
    with the off-diagonal entries doubled, so that ``x^T A x`` is one pass over the packed row.

    Halves what a model stores and, more to the point, what every scored image must stream from
    memory: at 256 px a MobileNetV2 PaDiM holds 4096 positions of 100x100 matrices, and reading
    them is what bounds its latency.
    """
    dim = inverse.shape[-1]
    rows, cols = np.triu_indices(dim)
    packed = inverse[:, rows, cols].astype(np.float32)
    packed[:, rows != cols] *= 2.0
    return np.ascontiguousarray(packed)


def unpack_precision(packed: np.ndarray, dim: int) -> np.ndarray:
    """The full symmetric ``(L, D, D)`` matrices back from :func:`pack_precision`."""
    rows, cols = np.triu_indices(dim)
    values = packed.astype(np.float32)
    values[:, rows != cols] *= 0.5
    full = np.zeros((len(packed), dim, dim), dtype=np.float32)
    full[:, rows, cols] = values
    full[:, cols, rows] = values
    return full


def pack_cholesky(inverse: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The upper triangular factors R (``R^T R = inverse``) of symmetric positive definite
    ``(L, D, D)`` matrices, their upper triangles packed row by row as ``(L, D(D+1)/2)`` float32,
    so that ``||R x||^2 = x^T A x`` is one pass over the packed row, as with
    :func:`pack_precision`. Factored in float64, ``chunk`` positions at a time."""
    positions, dim, _ = inverse.shape
    rows, cols = np.triu_indices(dim)
    packed = np.empty((positions, len(rows)), dtype=np.float32)
    for start in range(0, positions, chunk):
        try:
            lower = np.linalg.cholesky(inverse[start : start + chunk].astype(np.float64))
        except np.linalg.LinAlgError as error:
            raise InputError(
                "an inverse covariance is not positive definite, so it has no Cholesky factor "
                f"({error}); raise the regularisation or use storage='float32'"
            ) from None
        packed[start : start + chunk] = lower[:, cols, rows]  # R = lower^T
    return packed


def unpack_cholesky(packed: np.ndarray, dim: int) -> np.ndarray:
    """The full ``(L, D, D)`` matrices ``R^T R`` back from :func:`pack_cholesky`."""
    rows, cols = np.triu_indices(dim)
    factor = np.zeros((len(packed), dim, dim), dtype=np.float64)
    factor[:, rows, cols] = packed
    return np.matmul(factor.transpose(0, 2, 1), factor).astype(np.float32)


def to_half(packed: np.ndarray, what: str) -> np.ndarray:
    """``packed`` as float16, refusing values beyond its range (+-65504) rather than storing inf."""
    with np.errstate(over="ignore"):
        half = packed.astype(np.float16)
    if not np.isfinite(half).all():
        raise InputError(
            f"the {what} reach {np.abs(packed).max():.3g}, beyond float16's range (65504); "
            "raise the regularisation or use storage='float32'"
        )
    return half


def low_rank_precision(inverse: np.ndarray, rank: int, chunk: int = 256
                       ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Each inverse covariance ``(L, D, D)`` kept as ``a I - V^T V``: ``V`` ``(L, rank, D)``,
    ``a`` ``(L,)`` float32, factored in float64 ``chunk`` positions at a time.

    The ``rank`` directions of largest variance (smallest precision ``p_j``, eigenvector
    ``u_j``) keep their own precision; the other ``D - rank`` share one, ``a``, their mean
    precision, so an isotropic deviation has on average the distance it had (probabilistic PCA
    keeps the mean *variance* instead, which overstates the distance the small variances give).
    ``V``'s rows are ``sqrt(a - p_j) u_j``; ``a >= p_j`` because the kept ``p_j`` are the
    smallest, so ``a I - V^T V`` is positive semi-definite and the distance real.
    """
    positions, dim, _ = inverse.shape
    if not 0 < rank < dim:
        raise ValueError(f"PaDiM rank must be in 1..{dim - 1} (d = {dim}); got {rank}")
    basis = np.empty((positions, rank, dim), dtype=np.float32)
    isotropic = np.empty(positions, dtype=np.float32)
    for start in range(0, positions, chunk):
        values, vectors = np.linalg.eigh(inverse[start : start + chunk].astype(np.float64))
        # eigh sorts ascending: the first ``rank`` are the smallest precisions
        a = values[:, rank:].mean(axis=1)
        weight = np.sqrt(np.maximum(a[:, None] - values[:, :rank], 0.0))  # (c, rank)
        kept = vectors[:, :, :rank] * weight[:, None, :]  # columns sqrt(a - p_j) u_j
        basis[start : start + chunk] = kept.transpose(0, 2, 1)
        isotropic[start : start + chunk] = a
    return basis, isotropic


@intrinsic
def _widen(typingctx, value):  # pragma: no cover - compiled
    """float32 of a float32 (itself) or of float16 bits held as uint16 (NumPy's float16, which
    numba cannot type, is passed as a uint16 view); LLVM turns a loop of these into F16C
    conversions where the CPU has them."""
    if value == types.float32:
        return types.float32(value), lambda context, builder, signature, args: args[0]
    if value == types.uint16:

        def codegen(context, builder, signature, args):
            half = builder.bitcast(args[0], ir.HalfType())
            return builder.fpext(half, ir.FloatType())

        return types.float32(value), codegen
    return None


@numba.njit(cache=True, nogil=True, fastmath=True)
def _quadratic_forms(vectors, mean, packed, factor):  # pragma: no cover - compiled
    # One contiguous slice of the packed row per i, so that LLVM vectorises the inner product;
    # indexing the 2-D array directly compiled to a scalar loop three times slower. Row i of the
    # packed matrix against delta[i:] is (A delta)_i's upper half for a packed precision
    # (x^T A x = sum_i delta_i * row_i, off-diagonals doubled) or (R delta)_i for a Cholesky
    # factor (x^T A x = sum_i row_i^2).
    positions, n, dim = vectors.shape
    size = packed.shape[1]
    flat = packed.ravel()
    out = np.empty((positions, n), dtype=np.float32)
    delta = np.empty(dim, dtype=np.float32)
    for position in range(positions):
        for k in range(n):
            for i in range(dim):
                delta[i] = vectors[position, k, i] - mean[position, i]
            total = np.float32(0.0)
            start = position * size
            for i in range(dim):
                length = dim - i
                segment = flat[start : start + length]
                tail = delta[i:]
                row = np.float32(0.0)
                for j in range(length):
                    row += _widen(segment[j]) * tail[j]
                start += length
                total += row * row if factor else delta[i] * row
            out[position, k] = np.sqrt(max(total, np.float32(0.0)))
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _low_rank_forms(vectors, mean, basis, isotropic):  # pragma: no cover - compiled
    # x^T (a I - V^T V) x = a ||x||^2 - ||V x||^2, one contiguous row of V at a time.
    positions, n, dim = vectors.shape
    rank = basis.shape[1]
    out = np.empty((positions, n), dtype=np.float32)
    delta = np.empty(dim, dtype=np.float32)
    for position in range(positions):
        for k in range(n):
            norm = np.float32(0.0)
            for i in range(dim):
                delta[i] = vectors[position, k, i] - mean[position, i]
                norm += delta[i] * delta[i]
            total = isotropic[position] * norm
            for j in range(rank):
                row = basis[position, j]
                projection = np.float32(0.0)
                for i in range(dim):
                    projection += _widen(row[i]) * delta[i]
                total -= projection * projection
            out[position, k] = np.sqrt(max(total, np.float32(0.0)))
    return out


def low_rank_mahalanobis(
    vectors: np.ndarray, mean: np.ndarray, basis: np.ndarray, isotropic: np.ndarray
) -> np.ndarray:
    """Distances ``(L, n)`` as :func:`mahalanobis` for precisions kept by
    :func:`low_rank_precision` (``basis`` float32 or float16, widened in the kernel)."""
    if basis.dtype == np.float16:
        basis = np.ascontiguousarray(basis).view(np.uint16)
    else:
        basis = np.ascontiguousarray(basis, np.float32)
    return _low_rank_forms(
        np.ascontiguousarray(vectors, np.float32),
        np.ascontiguousarray(mean, np.float32),
        basis,
        np.ascontiguousarray(isotropic, np.float32),
    )


def mahalanobis(
    vectors: np.ndarray, mean: np.ndarray, packed: np.ndarray, factor: bool = False
) -> np.ndarray:
    """Distances ``(L, n)`` of ``vectors`` ``(L, n, D)`` to the per-position Gaussians whose
    inverse covariances are packed by :func:`pack_precision` (or, with ``factor``, whose
    Cholesky factors are packed by :func:`pack_cholesky`). ``packed`` may be float32 or float16;
    float16 is read as it is and widened to float32 in the kernel, which computes in float32."""
    if packed.dtype == np.float16:
        packed = np.ascontiguousarray(packed).view(np.uint16)
    else:
        packed = np.ascontiguousarray(packed, np.float32)
    return _quadratic_forms(
        np.ascontiguousarray(vectors, np.float32),
        np.ascontiguousarray(mean, np.float32),
        packed,
        bool(factor),
    )


@dataclass(frozen=True)
class PaDiMConfig:
    """Hyper-parameters, with the paper's defaults where it gives them.

    ``taps``: the three layers, finest first (None: the backbone's three). ``n_features``: d, the
    size of the random channel subset (None: :data:`N_FEATURES_DEFAULTS`, capped at the embedding
    size). ``channel_index``: an explicit subset (indices into the concatenated taps, in the order
    the embedding should hold them), which overrides the random draw. ``regularisation``: epsilon
    of Sigma + epsilon I. ``sigma``: of the Gaussian smoothing of the anomaly map. ``storage``: how
    the fitted Gaussians are kept in memory and in the model file, one of :data:`STORAGE_CHOICES`:
    ``"float32"`` (as fitted), ``"float16"`` (the packed inverse covariances in half precision:
    half the size), ``"cholesky16"`` (their Cholesky factors in half precision: half the size)
    or ``"lowrank16"`` (each inverse covariance as ``rank`` directions of its own plus one shared
    precision for the rest, :func:`low_rank_precision`, in half precision: ``rank / (d + 1)``
    times the packed size times two); see the module docstring.
    """

    backbone: str = "mobilenet_v2"
    taps: tuple[str, ...] | None = None
    size: tuple[int, int] = (256, 256)
    n_features: int | None = None
    channel_index: tuple[int, ...] | None = None
    sigma: float = 4.0
    regularisation: float = 0.01
    batch_size: int = 8
    seed: int = 0
    progress: bool = False
    storage: str = "float32"
    rank: int = 8

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_CHOICES:
            raise ValueError(
                f"PaDiM storage must be one of {', '.join(STORAGE_CHOICES)}; got {self.storage!r}"
            )
        if self.rank < 1:
            raise ValueError(f"PaDiM rank must be at least 1; got {self.rank}")

    def resolved_taps(self) -> tuple[str, ...]:
        return tuple(self.taps) if self.taps else get_spec(self.backbone).taps


class PaDiM:
    """Per-position Gaussian anomaly detector; see the module docstring for the method."""

    name = "padim"

    def __init__(self, config: PaDiMConfig, backbone_onnx: bytes) -> None:
        self.config = config
        self.backbone_onnx = backbone_onnx
        self.extractor = FeatureExtractor(backbone_onnx)
        self.taps = config.resolved_taps()
        self.input_spec: InputSpec | None = None
        self.channel_index: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        # Packed inverse covariances (pack_precision) or, for storage "cholesky16", their packed
        # Cholesky factors (pack_cholesky), or for "lowrank16" the basis V of low_rank_precision
        # (with ``isotropic``, its a); float32 or float16 as the storage says.
        self.precision: np.ndarray | None = None
        self.isotropic: np.ndarray | None = None
        self.training_images = 0

    @property
    def inv_covariance(self) -> np.ndarray | None:
        """The full ``(L, d, d)`` inverse covariances (unpacked on demand, for inspection)."""
        if self.precision is None or self.mean is None:
            return None
        if self.config.storage == "cholesky16":
            return unpack_cholesky(self.precision, self.mean.shape[1])
        if self.config.storage == "lowrank16":
            basis = self.precision.astype(np.float32)
            dim = self.mean.shape[1]
            return self.isotropic[:, None, None] * np.eye(dim, dtype=np.float32) - np.matmul(
                basis.transpose(0, 2, 1), basis
            )
        return unpack_precision(self.precision, self.mean.shape[1])

    # -- steps 1 and 2: embedding vectors, random dimensionality reduction ---------------------
    def tap_channels(self) -> tuple[int, ...]:
        """Channel count of each tap, from the graph or, if it does not say, from a probe run."""
        shapes = {o.name: o.shape for o in self.extractor.session.get_outputs()}
        channels = [shapes.get(t, [None, None])[1] for t in self.taps]
        if all(isinstance(c, int) for c in channels):
            return tuple(channels)
        probe = np.zeros((1, 3, *self.config.size), dtype=np.float32)
        maps = self.extractor(probe, self.taps)
        return tuple(maps[t].shape[1] for t in self.taps)

    def resolve_channel_index(self) -> np.ndarray:
        """The explicit subset of the config, or a seeded random one of size d."""
        total = sum(self.tap_channels())
        explicit, n_features = self.config.channel_index, self.config.n_features
        if explicit is not None:
            index = np.asarray(explicit, dtype=np.int64)
            if index.ndim != 1 or len(index) == 0 or len(np.unique(index)) != len(index):
                raise ValueError("channel_index must be a non-empty list of distinct channels")
            if index.min() < 0 or index.max() >= total:
                raise ValueError(f"channel_index must lie in 0..{total - 1}; got {index.max()}")
            if n_features is not None and n_features != len(index):
                raise ValueError(
                    f"n_features={n_features} contradicts a channel_index of {len(index)} entries"
                )
            return index
        if n_features is None:
            n_features = min(N_FEATURES_DEFAULTS.get(self.config.backbone, total), total)
        return select_channels(total, n_features, self.config.seed)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Reduced embedding vectors ``(N, d, h, w)`` for a network-ready batch ``(N, 3, H, W)``.

        Only the selected channels of each tap are upsampled (nearest, to the first tap's grid);
        the result holds them in ``channel_index`` order, as anomalib's ``index_select`` does.
        """
        if self.channel_index is None:
            raise RuntimeError("PaDiM has no channel subset yet: call fit() or load a model first")
        maps = self.extractor(batch, self.taps)
        grid = maps[self.taps[0]].shape[-2:]
        out = np.empty((len(batch), len(self.channel_index), *grid), dtype=np.float32)
        offset = 0
        for tap in self.taps:
            features = maps[tap]
            channels = features.shape[1]
            chosen = np.flatnonzero(
                (self.channel_index >= offset) & (self.channel_index < offset + channels)
            )
            if len(chosen):
                subset = features[:, self.channel_index[chosen] - offset]
                out[:, chosen] = resize_nearest(subset, grid)
            offset += channels
        return out

    def _vectors(self, images: Sequence[np.ndarray], desc: str):
        """Per batch: embedding vectors as ``(L, n, d)`` (C-contiguous) and the grid ``(h, w)``."""
        size = self.config.batch_size
        for i in progress_bar(
            range(0, len(images), size), desc=desc, unit="batch", enabled=self.config.progress
        ):
            embedding = self.embed(to_network_input(images[i : i + size], self.input_spec))
            n, dim, h, w = embedding.shape
            vectors = np.ascontiguousarray(embedding.reshape(n, dim, h * w).transpose(2, 0, 1))
            yield vectors, (h, w)

    # -- step 3: learning of the normality ------------------------------------------------------
    def fit(self, images: Sequence[np.ndarray]) -> None:
        if len(images) < 2:
            raise InputError(
                f"PaDiM needs at least two normal training images (a sample covariance per "
                f"patch position); got {len(images)}"
            )
        channels = as_hwc(np.asarray(images[0])).shape[2]
        self.input_spec = InputSpec.for_channels(channels, self.config.size)
        self.channel_index = self.resolve_channel_index()
        vectors: np.ndarray | None = None
        done = 0
        for part, _ in self._vectors(images, "PaDiM features"):
            if vectors is None:
                vectors = np.empty((part.shape[0], len(images), part.shape[2]), np.float32)
            vectors[:, done : done + part.shape[1]] = part
            done += part.shape[1]
        self.mean, inverse = gaussian_parameters(vectors, self.config.regularisation)
        del vectors
        self.precision = self._packed(inverse)
        self.training_images = len(images)

    def _packed(self, inverse: np.ndarray) -> np.ndarray:
        """The fitted inverse covariances ``(L, d, d)`` packed as ``config.storage`` says."""
        storage = self.config.storage
        if storage == "float32":
            return pack_precision(inverse)
        if storage == "float16":
            return to_half(pack_precision(inverse), "inverse covariances")
        if storage == "lowrank16":
            basis, self.isotropic = low_rank_precision(inverse, self.config.rank)
            return to_half(basis, "low-rank bases of the inverse covariances")
        return to_half(pack_cholesky(inverse), "Cholesky factors of the inverse covariances")

    # -- step 4: inference ---------------------------------------------------------------------
    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        if self.input_spec is None or self.mean is None or self.precision is None:
            raise RuntimeError("PaDiM is not fitted: call fit() or load a model first")
        maps = []
        for vectors, (h, w) in self._vectors(images, "PaDiM scoring"):
            n = vectors.shape[1]
            if self.config.storage == "lowrank16":
                distances = low_rank_mahalanobis(vectors, self.mean, self.precision, self.isotropic)
            else:
                distances = mahalanobis(
                    vectors, self.mean, self.precision, factor=self.config.storage == "cholesky16"
                )
            maps.append(resize_bilinear(distances.T.reshape(n, 1, h, w), self.input_spec.size))
        blurred = gaussian_blur(np.concatenate(maps)[:, 0], self.config.sigma)
        return Prediction(scores=blurred.max(axis=(1, 2)).astype(np.float32), maps=blurred)

    # -- persistence ---------------------------------------------------------------------------
    def to_artifact(self) -> Artifact:
        if self.mean is None or self.precision is None or self.input_spec is None:
            raise RuntimeError("PaDiM is not fitted: nothing to save")
        config = {
            **asdict(self.config),
            "taps": list(self.taps),
            "size": list(self.config.size),
            "channel_index": (
                None if self.config.channel_index is None else list(self.config.channel_index)
            ),
        }
        return Artifact(
            meta={
                "method": self.name,
                "config": config,
                "input": self.input_spec.to_dict(),
                "training_images": self.training_images,
            },
            graphs={"backbone": self.backbone_onnx},
            arrays={
                "mean": self.mean,
                _ARRAY_NAMES[self.config.storage]: self.precision,
                "channel_index": self.channel_index,
                **({} if self.isotropic is None else {_ISOTROPIC: self.isotropic}),
            },
        )

    @classmethod
    def from_artifact(cls, artifact: Artifact) -> PaDiM:
        config = dict(artifact.meta["config"])
        config["taps"] = tuple(config["taps"])
        config["size"] = tuple(config["size"])
        if config.get("channel_index") is not None:
            config["channel_index"] = tuple(config["channel_index"])
        storage = config.setdefault("storage", "float32")  # files from before the option
        model = cls(PaDiMConfig(**config), artifact.graphs["backbone"])
        model.input_spec = InputSpec.from_dict(artifact.meta["input"])
        model.channel_index = np.asarray(artifact.arrays["channel_index"], dtype=np.int64)
        model.mean = np.ascontiguousarray(artifact.arrays["mean"], np.float32)
        dtype = np.float32 if storage == "float32" else np.float16
        model.precision = np.ascontiguousarray(artifact.arrays[_ARRAY_NAMES[storage]], dtype)
        if storage == "lowrank16":
            model.isotropic = np.ascontiguousarray(artifact.arrays[_ISOTROPIC], np.float32)
        model.training_images = int(artifact.meta["training_images"])
        return model
