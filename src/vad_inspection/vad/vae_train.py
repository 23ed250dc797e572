"""Training side (torch) of the crack paper's VAE: network, loss terms, Grad-CAM, step, export.

Only :meth:`vad_inspection.vad.vae.VAE.fit` imports this module; inference runs the exported ONNX
graph without torch.

The model (García-de-la-Puente et al., IDEAL 2023; after Liu et al., CVPR 2020):

* **Encoder**: five convolutional blocks (convolution, batch normalisation, leaky ReLU); the first
  ``downsample`` halve the grid. The last block's output ``f`` (``K`` channels on an ``h x w``
  grid) is flattened and mapped by two linear layers to the latent mean ``z_mu`` and log-variance
  ``z_logvar`` (32-d). **Reparameterisation**: ``z = z_mu + exp(z_logvar / 2) * eps``.
  **Decoder**: a linear layer back to ``K x h x w``, then the five blocks mirrored (transposed
  convolutions where the encoder halved), and a last convolution to the image's channels.
* **Loss**: ``L_VAE = ||x - x_hat||^2 + beta * KL(q(z|x) || N(0, I))``, both summed over the
  pixels / latent dimensions of each image and averaged over the batch (the ELBO's scale).
* **Grad-CAM attention** from the latent mean to the last encoder block:
  ``alpha_k = mean_{p} d(sum_i z_mu_i) / d f_k(p)`` and ``a = sigmoid(sum_k alpha_k f_k)``,
  upsampled bilinearly to the input. Grad-CAM is taken from the whole latent mean, i.e. the
  gradient of ``sum_i z_mu_i`` (Liu et al. back-propagate a ones vector through ``z_mu``); one
  weight per channel, not one map per latent dimension. Because ``z_mu = W vec(f) + b`` is linear
  in ``f``, ``d z_mu_i / d f_k(p) = W[i, k, p]`` for every image, so
  ``alpha_k = sum_i mean_p W[i, k, p]``: a constant of the trained model, computed here from the
  weights (differentiably, so the constraint trains them) and folded into the exported graph.
* **Coverage constraint** ``f_c(a) = 1 - mean(a) <= 0`` per image, imposed with the log-barrier
  extension ``psi_t`` (Kervadec et al.): ``L = L_VAE + lambda * mean_images psi_t(f_c(a))``. The
  mean over the batch rather than the sum keeps ``lambda`` independent of the batch size (a sum
  is the same with ``lambda / batch``). As ``a`` is a sigmoid, ``f_c(a) > 0`` always: the barrier
  works in its linear extension, a constant pressure ``lambda * t`` towards full coverage.

The ablation variants: ``vae_plain`` drops the constraint; ``ae`` also drops sampling and the KL
term (``z = z_mu``). Grad-CAM is still computed (and exported) for both, unconstrained.

The training loop, the checkpoints and the export are every torch-trained method's
(:mod:`vad_inspection.vad.torch_training`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vad_inspection.vad.torch_training import CHECKPOINT as CHECKPOINT
from vad_inspection.vad.torch_training import (
    Epoch,
    Run,
    Training,
    batches,
    export_graph,
    held_out,
    torch_threads,
)
from vad_inspection.vad.vae import GRAPH_INPUT, GRAPH_OUTPUTS, TrainingSummary, VAEConfig

#: Bound of the latent log-variance (variances between e^-8 and e^8 cover any sensible posterior).
LOGVAR_BOUND = 8.0


# --------------------------------------------------------------------------------------------
# Loss terms: small pure functions, checked by hand in the tests
# --------------------------------------------------------------------------------------------


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L2 reconstruction error: squared error summed over each image, averaged over the batch."""
    return ((x - x_hat) ** 2).flatten(1).sum(1).mean()


def kl_divergence(z_mu: torch.Tensor, z_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(z_mu, exp(z_logvar)) || N(0, I)) summed over latent dimensions, batch-averaged."""
    return (-0.5 * (1.0 + z_logvar - z_mu**2 - z_logvar.exp()).sum(1)).mean()


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """Kervadec et al.'s log-barrier extension psi_t of the constraint ``z <= 0``, elementwise.

    ``-(1/t) log(-z)`` for ``z <= -1/t^2``, else the tangent line ``t z - (1/t) log(1/t^2) + 1/t``:
    equal in value and slope (t) at ``-1/t^2``, so it is smooth, finite for infeasible ``z`` and
    still rewards going deeper into the feasible region.
    """
    edge = -1.0 / t**2
    inside = -torch.log(-torch.clamp(z, max=edge)) / t  # clamp: no log of a positive number
    outside = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(z <= edge, inside, outside)


def coverage(a: torch.Tensor) -> torch.Tensor:
    """The coverage constraint's left side ``f_c(a) = 1 - mean(a)``, one value per image."""
    return 1.0 - a.flatten(1).mean(1)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def _block(
    c_in: int, c_out: int, halve: bool, transposed: bool = False, shift: bool = True
) -> nn.Sequential:
    """Convolution (4x4 stride 2 where the grid halves or doubles, else 3x3), BN, leaky ReLU.

    ``shift=False``: batch normalisation without its learned scale and shift (see
    :class:`Encoder`)."""
    if halve:
        conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
        conv = conv_type(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False)
    else:
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out, affine=shift), nn.LeakyReLU(0.2))


def block_channels(width: int) -> tuple[int, ...]:
    """Output channels of the five encoder blocks: doubling from ``width``, capped at 4x."""
    return tuple(width * m for m in (1, 2, 4, 4, 4))


class Encoder(nn.Module):
    """Five blocks to the last feature map ``f``, then linear heads to ``z_mu``, ``z_logvar``.

    The last block's batch normalisation has no learned shift: with one, the coverage constraint
    can be met trivially by a constant offset of the channels Grad-CAM weighs (attention 1 on any
    image). On CrackForest tiles this made no measurable difference to the attention map.
    """

    def __init__(self, config: VAEConfig, channels: int) -> None:
        super().__init__()
        halvings = config.grid_halvings()
        widths = block_channels(config.width)
        ins = (channels, *widths[:-1])
        self.blocks = nn.Sequential(
            *(
                _block(i, o, n < halvings, shift=n < len(widths) - 1)
                for n, (i, o) in enumerate(zip(ins, widths, strict=True))
            )
        )
        self.grid = (config.size[0] >> halvings, config.size[1] >> halvings)
        self.feature_shape = (widths[-1], *self.grid)
        flat = math.prod(self.feature_shape)
        self.z_mu = nn.Linear(flat, config.latent_dim)
        self.z_logvar = nn.Linear(flat, config.latent_dim) if config.variational else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``f``: the last encoder block's output, where Grad-CAM looks."""
        return self.blocks(x)

    def heads(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z_mu`` and ``z_logvar``; the log-variance is bounded to +-:data:`LOGVAR_BOUND` so that
        one batch-norm hiccup early in training cannot overflow ``exp`` in the KL term."""
        flat = f.flatten(1)
        if self.z_logvar is None:
            return self.z_mu(flat), None
        return self.z_mu(flat), self.z_logvar(flat).clamp(-LOGVAR_BOUND, LOGVAR_BOUND)


class Decoder(nn.Module):
    """The encoder mirrored: linear to the last grid, five blocks back, a convolution out."""

    def __init__(self, config: VAEConfig, channels: int, feature_shape: tuple[int, ...]) -> None:
        super().__init__()
        halvings = config.grid_halvings()
        widths = block_channels(config.width)
        self.feature_shape = feature_shape
        self.fc = nn.Linear(config.latent_dim, math.prod(feature_shape))
        outs = (*widths[-2::-1], widths[0])  # mirror of the encoder's inputs, first block -> width
        ins = widths[::-1]
        self.blocks = nn.Sequential(
            *(
                _block(i, o, 4 - n < halvings, transposed=True)
                for n, (i, o) in enumerate(zip(ins, outs, strict=True))
            )
        )
        self.out = nn.Conv2d(widths[0], channels, kernel_size=3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        f = self.fc(z).view(-1, *self.feature_shape)
        return self.out(self.blocks(f))


class ConvVAE(nn.Module):
    """Encoder + decoder; ``variational=False`` (the ``ae`` variant) is a plain autoencoder."""

    def __init__(self, config: VAEConfig, channels: int) -> None:
        super().__init__()
        self.size = config.size
        self.variational = config.variational
        self.encoder = Encoder(config, channels)
        self.decoder = Decoder(config, channels, self.encoder.feature_shape)

    def gradcam_weights(self) -> torch.Tensor:
        """``alpha_k = sum_i mean_p W_mu[i, k, p]`` (differentiable in the weights)."""
        channels = self.encoder.feature_shape[0]
        weight = self.encoder.z_mu.weight  # (latent, K * h * w), flattened as (K, h, w)
        return weight.view(weight.shape[0], channels, -1).mean(2).sum(0)

    def forward(
        self, x: torch.Tensor, noise: torch.Generator | None = None
    ) -> dict[str, torch.Tensor | None]:
        """Reconstruction, latent statistics and attention; samples ``z`` when ``noise`` given."""
        f = self.encoder.features(x)
        z_mu, z_logvar = self.encoder.heads(f)
        z = z_mu
        if noise is not None and z_logvar is not None:
            eps = torch.randn(z_mu.shape, generator=noise, dtype=z_mu.dtype)
            z = z_mu + torch.exp(0.5 * z_logvar) * eps
        return {
            "x_hat": self.decoder(z),
            "z_mu": z_mu,
            "z_logvar": z_logvar,
            "attention": attention(f, self.gradcam_weights(), self.size),
        }


def attention(f: torch.Tensor, alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``sigmoid(sum_k alpha_k f_k)`` upsampled bilinearly to ``size``: ``(N, 1, H, W)``."""
    cam = (f * alpha.view(1, -1, 1, 1)).sum(1, keepdim=True)
    return F.interpolate(torch.sigmoid(cam), size=size, mode="bilinear", align_corners=False)


def gradcam_weights_autograd(net: ConvVAE, x: torch.Tensor) -> torch.Tensor:
    """Grad-CAM weights per image ``(N, K)`` by back-propagation, as Grad-CAM defines them.

    The reference the folded constants are tested against: equal for every image, because
    ``z_mu`` is linear in ``f``.
    """
    f = net.encoder.features(x).detach().requires_grad_(True)
    z_mu, _ = net.encoder.heads(f)
    (grad,) = torch.autograd.grad(z_mu.sum(), f)
    return grad.mean(dim=(2, 3))


def loss_terms(
    net: ConvVAE, x: torch.Tensor, config: VAEConfig, noise: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Every term of the variant's loss and their weighted total."""
    out = net(x, noise)
    terms = {"reconstruction": reconstruction_loss(x, out["x_hat"])}
    total = terms["reconstruction"]
    if config.variational:
        terms["kl"] = kl_divergence(out["z_mu"], out["z_logvar"])
        total = total + config.beta * terms["kl"]
    if config.constrained:
        terms["coverage"] = log_barrier(coverage(out["attention"]), config.t).mean()
        total = total + config.lam * terms["coverage"]
    terms["total"] = total
    return terms


# --------------------------------------------------------------------------------------------
# Training: the method's step (the loop: vad_inspection.vad.torch_training)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` hands back: the exported graph and what inference needs beside it.

    ``val_index``: the held-out rows of the data; ``val_groups``: the images they came from (the
    groups given to :func:`train`), which :meth:`~vad_inspection.vad.vae.VAE.fit` calibrates on.
    """

    network: ConvVAE
    onnx: bytes
    gradcam_weights: np.ndarray
    val_index: np.ndarray
    val_groups: np.ndarray
    summary: TrainingSummary
    history: list[dict[str, float]]


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image flipped and turned by a random one of the eight square symmetries."""
    out = np.empty_like(batch)
    square = batch.shape[2] == batch.shape[3]
    for i, image in enumerate(batch):
        turned = np.rot90(image, k=int(rng.integers(4)), axes=(1, 2)) if square else image
        if rng.random() < 0.5:
            turned = turned[:, :, ::-1]
        if not square and rng.random() < 0.5:
            turned = turned[:, ::-1, :]
        out[i] = turned
    return out


def _batches(index: np.ndarray, size: int) -> list[np.ndarray]:
    """Mini-batches; a last batch of one image (which batch norm cannot train on) is dropped."""
    return batches(index, size, drop_single=True)


def evaluate_loss(net: ConvVAE, data: np.ndarray, config: VAEConfig) -> dict[str, float]:
    """Mean loss terms on held-out images, deterministic (eval mode, ``z = z_mu``)."""
    net.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for part in _batches(np.arange(len(data)), max(config.batch_size, 2)):
            terms = loss_terms(net, torch.from_numpy(data[part]), config, None)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(part)
            count += len(part)
    return {name: value / max(count, 1) for name, value in sums.items()}


def _resumable_config(config: VAEConfig) -> dict[str, object]:
    """The options a checkpoint must match to be resumed (not scoring, epochs or patience)."""
    ignored = {"progress", "checkpoint_dir", "map_source", "score", "sigma", "epochs", "patience",
               "threshold_k", "threshold_quantile", "line_length"}  # fmt: skip
    return {k: v for k, v in asdict(config).items() if k not in ignored}


def train(data: np.ndarray, config: VAEConfig, groups: np.ndarray | None = None) -> TrainResult:
    """Train the configured variant on normalised images ``(N, C, H, W)``; export to ONNX.

    ``groups`` (N,) says which image each row was cut from (None: each row its own image). The
    held-out split draws whole groups: tiles of one image on both sides would make the held-out
    loss (early stopping) and the calibration look better than on unseen images.

    Seeded: the same data, options and seed give the same weights (one process, CPU); without
    tiling, the same split as without groups. With ``config.checkpoint_dir`` the state is saved
    after every epoch and a later call with the same options and data resumes from it (also
    after the run finished: it then only re-exports).
    """
    groups = np.arange(len(data)) if groups is None else np.asarray(groups)
    if groups.shape != (len(data),):
        raise ValueError(f"groups must have one entry per row ({len(data)}); got {groups.shape}")
    with torch_threads():  # VAD_INSPECTION_THREADS, as every method trained with torch
        return _train(np.ascontiguousarray(data, np.float32), config, groups)


def _split(groups: np.ndarray, config: VAEConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, held-out rows and held-out groups (a seeded draw of whole groups)."""
    names = np.unique(groups)
    _, val_at = held_out(len(names), config.val_fraction, config.seed)
    val_groups = names[val_at]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val), val_groups


def _train(data: np.ndarray, config: VAEConfig, groups: np.ndarray) -> TrainResult:
    train_index, val_index, val_groups = _split(groups, config)
    run = Run(config, data, split=(train_index, val_index), options=_resumable_config(config))
    torch.manual_seed(config.seed)
    net = ConvVAE(config, data.shape[1])
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr)
    noise = torch.Generator().manual_seed(config.seed + 1)
    val_data = data[val_index]

    def batch_loss(part: np.ndarray, epoch: Epoch) -> torch.Tensor:
        """The loss of a batch, augmented with the epoch's generator (which drew its order: a
        resumed run draws the same batches and augmentations as an uninterrupted one)."""
        batch = augment(data[part], epoch.rng) if config.augment else data[part]
        x = torch.from_numpy(np.ascontiguousarray(batch))
        return loss_terms(net, x, config, noise if config.variational else None)["total"]

    summary, history = run.fit(
        Training(
            title=config.variant,
            network=net,
            parts={"model": net, "optimiser": optimiser, "noise": noise},
            batch_loss=batch_loss,
            held_out_loss=lambda _: evaluate_loss(net, val_data, config),
            batches=_batches,
        )
    )
    summary = replace(
        summary,
        train_images=len(np.unique(groups[train_index])),
        val_images=len(val_groups),
        train_pieces=len(train_index),
        val_pieces=len(val_index),
    )
    return TrainResult(
        network=net,
        onnx=export_onnx(net),
        gradcam_weights=net.gradcam_weights().detach().numpy().astype(np.float32),
        val_index=val_index,
        val_groups=val_groups,
        summary=summary,
        history=history,
    )


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


class Scorer(nn.Module):
    """What inference needs from one forward pass, with the Grad-CAM weights as constants.

    Outputs: ``error`` (N, 1, H, W) squared reconstruction error averaged over channels,
    ``residual`` (N, 1, H, W) the signed error ``x - x_hat`` averaged over channels,
    ``attention`` (N, 1, H, W) the upsampled Grad-CAM attention ``a``, ``score`` (N,) the mean
    squared reconstruction error of each image. The reconstruction decodes ``z_mu`` (no sampling).
    """

    def __init__(self, net: ConvVAE) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("alpha", net.gradcam_weights().detach().clone())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.net.encoder.features(image)
        z_mu, _ = self.net.encoder.heads(f)
        residual = image - self.net.decoder(z_mu)
        error = (residual**2).mean(1, keepdim=True)
        a = attention(f, self.alpha, self.net.size)
        return error, residual.mean(1, keepdim=True), a, error.mean(dim=(1, 2, 3))


def export_onnx(net: ConvVAE) -> bytes:
    """The trained network as an ONNX graph (dynamic batch) with the outputs of :class:`Scorer`."""
    channels = net.decoder.out.out_channels
    return export_graph(Scorer(net), (channels, *net.size), GRAPH_OUTPUTS, GRAPH_INPUT)
