"""Expectation-maximisation attention unit (EMAU) of EMANet, dimension-agnostic.

Li, Zhong, Wu, Yang, Lin, Liu, "Expectation-Maximization Attention Networks for Semantic Segmentation",
ICCV 2019, pp. 9167-9176, arXiv:1907.13426. Section 3.2 (E step eq. 12, M step eq. 13, reconstruction eq. 14),
Section 3.3 (bases maintenance by moving average eq. 15, L2Norm of the bases), Fig. 2.

The unit follows the authors' code (XiaLiPKU/EMANet ``network.py``, class ``EMAU``, and ``train.py`` for eq. 15):

    x  = conv_in(v)                                   1x1 conv with bias, (B, C, P)
    repeat num_iters times, without gradient:
        z  = softmax over the K bases of x^T mu        E step, (B, P, K)
        mu = l2norm over C of x (z / (1e-6 + sum_P z)) M step, (B, C, K)
    x~ = relu(mu z^T)                                  reconstruction, (B, C, P)
    out = relu(norm(conv_out(x~)) + v)                 1x1 conv without bias + norm, residual

Implementation notes:
- Gradients. As in the official code, the EM iterations run under ``torch.no_grad()`` and the reconstruction uses
  their outputs, so nothing upstream of the EM steps receives a gradient through them: ``conv_in`` never gets one
  (XiaLiPKU/EMANet issue #14, the author: "no grad on conv1 is better"; its only role is to map the ReLU'd features
  from R+ to R). MMSegmentation's ``EMAHead`` makes this explicit with ``requires_grad = False`` on that conv; we do
  the same so that optimisers and "every trainable parameter gets a gradient" checks agree. The input ``v`` still
  receives gradients through the residual.
- Bases ``mu`` are a registered buffer ``(1, C, K)`` (Kaiming-normal init ``N(0, 2/K)`` then L2-normalised over C).
  The authors update it in ``train.py`` (``mu <- momentum * mu + (1 - momentum) * mean_batch(mu_T)``); here the
  update happens inside ``forward`` when ``self.training`` (like BatchNorm running statistics), averaged over all
  processes when ``torch.distributed`` is initialised. Following MMSegmentation's ``EMAModule`` (the framework the
  SEAM paper's baselines were built with), the batch-mean bases are L2-normalised before the moving average.
- Conv initialisation as in the official code: normal with std ``sqrt(2 / (k^d * C_out))``; norm weight 1, bias 0.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer

__all__ = ["EMAttention"]


@torch.jit.unused
def _all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` over all processes when torch.distributed is initialised (identity otherwise)."""
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t = t / dist.get_world_size()
    return t


class EMAttention(nn.Module):
    """EM attention unit: reconstruct features from ``num_bases`` bases estimated by a few EM iterations.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: channels ``C`` of input and output.
        num_bases: number ``K`` of bases (64 in EMANet).
        num_iters: number of EM iterations ``T`` (3 in EMANet for training).
        momentum: moving-average momentum of the bases (EMANet ``EM_MOM`` 0.9: ``mu <- 0.9 mu + 0.1 mu_new``).
        norm: normalisation after the output 1x1 conv (MONAI name or ``(name, kwargs)``), or None.

    Raises:
        ValueError: if ``spatial_dims`` is not 1, 2 or 3, ``in_channels``/``num_bases``/``num_iters`` are not
            positive, or ``momentum`` is outside [0, 1].

    Example::

        emau = EMAttention(2, in_channels=128)
        y = emau(torch.randn(2, 128, 32, 16))  # (2, 128, 32, 16)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_bases: int = 64,
        num_iters: int = 3,
        momentum: float = 0.9,
        norm: str | tuple | None = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if num_bases < 1:
            raise ValueError(f"num_bases must be positive, got {num_bases}.")
        if num_iters < 1:
            raise ValueError(f"num_iters must be at least 1, got {num_iters}.")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}.")
        self.in_channels = in_channels
        self.num_bases = num_bases
        self.num_iters = num_iters
        self.momentum = momentum

        bases = torch.randn(1, in_channels, num_bases) * math.sqrt(2.0 / num_bases)
        self.register_buffer("bases", self._l2norm(bases, dim=1))  # (1, C, K)

        conv_type = Conv[Conv.CONV, spatial_dims]
        self.conv_in = conv_type(in_channels, in_channels, kernel_size=1, bias=True)
        for p in self.conv_in.parameters():
            p.requires_grad_(False)  # never reached by a gradient (see module docstring)
        self.conv_out = conv_type(in_channels, in_channels, kernel_size=1, bias=norm is None)
        self.norm = (
            get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels) if norm is not None else None
        )
        for conv in (self.conv_in, self.conv_out):
            fan_out = conv.out_channels * math.prod(conv.kernel_size)  # plain ints: works on the meta device
            with torch.no_grad():
                conv.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
                if conv.bias is not None:
                    conv.bias.zero_()

    @staticmethod
    def _l2norm(t: torch.Tensor, dim: int) -> torch.Tensor:
        """L2-normalise ``t`` along ``dim`` as the official code does (``t / (1e-6 + ||t||)``)."""
        return t / (1e-6 + torch.linalg.vector_norm(t, ord=2, dim=dim, keepdim=True))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Apply the EM attention unit.

        Args:
            v: feature map ``(B, C, *spatial)``.

        Returns:
            Tensor ``(B, C, *spatial)``. In training mode the ``bases`` buffer is updated as a side effect.

        Raises:
            ValueError: if the channel count of ``v`` is not ``in_channels``.
        """
        if v.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {v.shape[1]}.")
        batch = v.shape[0]
        spatial = v.shape[2:]
        x = self.conv_in(v).flatten(2)  # (B, C, *S) -> (B, C, P)
        mu = self.bases.expand(batch, -1, -1)  # (1, C, K) -> (B, C, K)
        z = torch.empty(0, device=v.device, dtype=v.dtype)
        with torch.no_grad():
            for _ in range(self.num_iters):
                z = torch.bmm(x.transpose(1, 2), mu)  # E step: (B, P, C) x (B, C, K) -> (B, P, K)
                z = F.softmax(z, dim=2)  # responsibilities over the K bases
                z_norm = z / (1e-6 + z.sum(dim=1, keepdim=True))  # normalise over positions P
                mu = torch.bmm(x, z_norm)  # M step: (B, C, P) x (B, P, K) -> (B, C, K)
                mu = self._l2norm(mu, dim=1)
        x = torch.bmm(mu, z.transpose(1, 2))  # reconstruction: (B, C, K) x (B, K, P) -> (B, C, P)
        x = F.relu(x.reshape([batch, self.in_channels] + list(spatial)))  # (B, C, P) -> (B, C, *S)
        x = self.conv_out(x)
        if self.norm is not None:
            x = self.norm(x)
        out = F.relu(x + v)

        if self.training:
            with torch.no_grad():
                new_bases = mu.mean(dim=0, keepdim=True)  # (B, C, K) -> (1, C, K)
                if not torch.jit.is_scripting():
                    new_bases = _all_reduce_mean(new_bases)
                new_bases = self._l2norm(new_bases, dim=1)
                self.bases.mul_(self.momentum).add_(new_bases, alpha=1.0 - self.momentum)
        return out
