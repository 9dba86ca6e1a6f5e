"""StarGAN's objectives (paper eqs. 1-7) as pure functions ``(nets, batch, weights) -> (loss, logs)``.

Nothing here steps an optimiser, draws random numbers or logs: the training loop draws the gradient-penalty
interpolation weights into the batch, so a loss is a deterministic function of its inputs. Logs are detached
0-d tensors (``float()`` them when printing) so that the GPU is not synchronised at every step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ..config import TrainConfig  # any object with adv_loss and the lambda_* weights


class Nets(NamedTuple):
    G: nn.Module
    D: nn.Module


@dataclass
class Batch:
    """One dataset's mini-batch. Labels span the whole schema (N, cls_dim); only ``groups`` are known."""

    x_real: torch.Tensor  # (N, 3, H, W) in [-1, 1]
    label_org: torch.Tensor  # (N, cls_dim) the images' own labels
    label_trg: torch.Tensor  # (N, cls_dim) target labels (the paper: random, here a shuffle of label_org)
    c_org: torch.Tensor  # (N, c_dim) generator conditions: labels + mask vector for joint training
    c_trg: torch.Tensor  # (N, c_dim)
    groups: list[tuple[slice, str]]  # this dataset's groups: (positions in cls_dim, kind)
    alpha: torch.Tensor  # (N, 1, 1, 1) uniform in [0, 1): where x_hat lies between x_fake and x_real
    x_keep: torch.Tensor | None = None  # (N, 3, H, W) a frozen release's G(x_real, c_trg), for lambda_keep


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, groups: list[tuple[slice, str]]) -> torch.Tensor:
    """Eqs. 2-3 on this dataset's logits only (the mask vector's job): binary cross-entropy summed over the
    attributes of exclusive/binary groups, cross-entropy for each categorical group; both averaged over N."""
    loss = logits.new_zeros(())
    for sl, kind in groups:
        if kind == "categorical":
            loss = loss + F.cross_entropy(logits[:, sl], labels[:, sl].argmax(1))
        else:
            loss = loss + F.binary_cross_entropy_with_logits(logits[:, sl], labels[:, sl],
                                                            reduction="sum") / logits.size(0)
    return loss


def gradient_penalty(D: nn.Module, x_real: torch.Tensor, x_fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x_hat D_src(x_hat)||_2 - 1)^2] on x_hat between real and fake images."""
    x_hat = (alpha * x_real + (1 - alpha) * x_fake).detach().requires_grad_(True)  # (N, 3, H, W)
    out_src, _ = D(x_hat)
    (grad,) = torch.autograd.grad(out_src.sum(), x_hat, create_graph=True)  # per-sample grads: sum is exact
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(out_src: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, as StarGAN v2 uses it): 0.5 E[||grad_x D_src(x_real)||^2] on real images only.

    ``out_src`` must have been computed from ``x_real`` with ``requires_grad``. Like ``gradient_penalty`` (and
    the official code's ``grad_outputs=ones``), D_src is the sum of the PatchGAN map."""
    (grad,) = torch.autograd.grad(out_src.sum(), x_real, create_graph=True)  # (N, 3, H, W)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def d_loss(nets: Nets, batch: Batch, w: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 for D: L_D = -L_adv + lambda_cls L_cls^r. ``w.adv_loss`` picks L_adv and its penalty: ``wgan-gp``
    (the paper: Wasserstein loss + lambda_gp * gradient penalty, Gulrajani et al. 2017) or ``ns-r1`` (StarGAN v2,
    Choi et al. 2020: non-saturating logistic loss softplus(-D(x)) + softplus(D(G(x, c))) + lambda_r1 * R1)."""
    ns = w.adv_loss == "ns-r1"
    x_real = batch.x_real.detach().requires_grad_(True) if ns else batch.x_real  # R1 differentiates D(x_real)
    out_src, out_cls = nets.D(x_real)  # (N, 1, h, w), (N, cls_dim)
    d_loss_cls = classification_loss(out_cls, batch.label_org, batch.groups)  # real images, own labels
    with torch.no_grad():  # D's step does not train G
        x_fake = nets.G(batch.x_real, batch.c_trg)
    out_fake = nets.D(x_fake)[0]
    if ns:
        d_loss_real, d_loss_fake = F.softplus(-out_src).mean(), F.softplus(out_fake).mean()
        reg_name, d_loss_reg, lambda_reg = "D/loss_r1", r1_penalty(out_src, x_real), w.lambda_r1
    else:
        d_loss_real, d_loss_fake = -out_src.mean(), out_fake.mean()
        reg_name, lambda_reg = "D/loss_gp", w.lambda_gp
        d_loss_reg = gradient_penalty(nets.D, batch.x_real, x_fake, batch.alpha)
    loss = d_loss_real + d_loss_fake + w.lambda_cls * d_loss_cls + lambda_reg * d_loss_reg
    logs = {"D/loss_real": d_loss_real, "D/loss_fake": d_loss_fake, "D/loss_cls": d_loss_cls,
            reg_name: d_loss_reg, "D/loss": loss}
    return loss, {k: v.detach() for k, v in logs.items()}


def g_loss(nets: Nets, batch: Batch, w: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 7 for G: L_G = L_adv + lambda_cls L_cls^f + lambda_rec L_rec (eq. 4: cycle back with c_org, L1).
    L_adv is -D(G(x, c)) for ``wgan-gp`` and its non-saturating form softplus(-D(G(x, c))) for ``ns-r1``;
    ``lambda_id`` > 0 adds lambda_id |x - G(x, c_org)|_1 and ``lambda_keep`` > 0 with ``batch.x_keep``
    lambda_keep |G(x, c_trg) - x_keep|_1 (neither is in the paper)."""
    x_fake = nets.G(batch.x_real, batch.c_trg)  # (N, 3, H, W)
    out_src, out_cls = nets.D(x_fake)
    g_loss_fake = F.softplus(-out_src).mean() if w.adv_loss == "ns-r1" else -out_src.mean()
    g_loss_cls = classification_loss(out_cls, batch.label_trg, batch.groups)  # fool D's classifier
    x_rec = nets.G(x_fake, batch.c_org)
    g_loss_rec = (batch.x_real - x_rec).abs().mean()
    loss = g_loss_fake + w.lambda_rec * g_loss_rec + w.lambda_cls * g_loss_cls
    logs = {"G/loss_fake": g_loss_fake, "G/loss_rec": g_loss_rec, "G/loss_cls": g_loss_cls}
    if w.lambda_id:  # optional: G(x, c_org) should be x itself (CycleGAN's identity loss), not a recoloured x
        logs["G/loss_id"] = (batch.x_real - nets.G(batch.x_real, batch.c_org)).abs().mean()
        loss = loss + w.lambda_id * logs["G/loss_id"]
    if w.lambda_keep and batch.x_keep is not None:  # optional: the release's translation of this batch, kept
        logs["G/loss_keep"] = (x_fake - batch.x_keep).abs().mean()
        loss = loss + w.lambda_keep * logs["G/loss_keep"]
    logs["G/loss"] = loss
    return loss, {k: v.detach() for k, v in logs.items()}
