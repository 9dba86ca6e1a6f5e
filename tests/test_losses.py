"""The losses against references written out by hand (formulas, not the functions under test)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stargan_core.config import TrainConfig
from stargan_core.domains import JOINT
from stargan_core.nets.losses import Batch, Nets, classification_loss, d_loss, g_loss, gradient_penalty, r1_penalty

W = TrainConfig(lambda_cls=2.0, lambda_rec=10.0, lambda_gp=10.0)
W_NS = TrainConfig(adv_loss="ns-r1", lambda_cls=2.0, lambda_rec=10.0, lambda_r1=0.7)  # StarGAN v2's objective


class LinearD(nn.Module):
    """out_src = <w, x> per image (as a (N, 1, 1, 1) map), out_cls = a fixed linear map of the image mean."""

    def __init__(self, w: torch.Tensor, cls_dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.cls = nn.Parameter(torch.linspace(-1, 1, cls_dim))

    def forward(self, x):
        out_src = (x * self.w).flatten(1).sum(1).view(-1, 1, 1, 1)
        return out_src, x.mean((1, 2, 3))[:, None] * self.cls[None] + self.cls[None]


class ShiftG(nn.Module):
    """G(x, c) = x + b * (sum of c): a one-parameter generator whose outputs are easy to write out."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(0.1))

    def forward(self, x, c):
        return x + self.b * c.sum(1).view(-1, 1, 1, 1)


def _bce(z, y):  # -[y log s(z) + (1 - y) log(1 - s(z))], written out
    s = 1 / (1 + torch.exp(-z))
    return -(y * torch.log(s) + (1 - y) * torch.log(1 - s))


def _joint_batch(dataset: str, n: int = 4) -> Batch:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    label_org = torch.zeros(n, JOINT.cls_dim)
    if dataset == "celeba":
        label_org[:, :5] = (torch.rand(n, 5, generator=g) > 0.5).float()
    else:
        label_org[torch.arange(n), 5 + torch.randint(8, (n,), generator=g)] = 1
    label_trg = label_org.flip(0)
    groups = [(JOINT.group_slice(gr.name), gr.kind) for ds in JOINT.datasets if ds.name == dataset for gr in ds.groups]
    return Batch(x, label_org, label_trg, JOINT.condition(label_org, dataset), JOINT.condition(label_trg, dataset),
                 groups, torch.rand(n, 1, 1, 1, generator=g))


def test_classification_loss_celeba_part_is_summed_bce_over_its_five_labels():
    b = _joint_batch("celeba")
    logits = torch.randn(4, JOINT.cls_dim)
    want = _bce(logits[:, :5], b.label_org[:, :5]).sum() / 4  # official: BCE summed over attributes / N
    got = classification_loss(logits, b.label_org, b.groups)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    logits2 = logits.clone()
    logits2[:, 5:] = 100.0  # RaFD's logits are not CelebA's business (the mask vector's point)
    assert classification_loss(logits2, b.label_org, b.groups).item() == pytest.approx(got.item(), rel=1e-6)


def test_classification_loss_rafd_part_is_cross_entropy_over_its_eight_classes():
    b = _joint_batch("rafd")
    logits = torch.randn(4, JOINT.cls_dim)
    z = logits[:, 5:13]
    target = b.label_org[:, 5:13].argmax(1)
    want = -(z[torch.arange(4), target] - torch.log(torch.exp(z).sum(1))).mean()
    assert classification_loss(logits, b.label_org, b.groups).item() == pytest.approx(want.item(), rel=1e-5)


def test_gradient_penalty_of_a_linear_critic_is_norm_of_its_weights_minus_one_squared():
    w = torch.randn(1, 3, 4, 4)
    D = LinearD(w, 5)
    x_real, x_fake = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    gp = gradient_penalty(D, x_real, x_fake, torch.rand(6, 1, 1, 1))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)  # grad_x <w, x> = w everywhere


def test_gradient_penalty_interpolates_with_alpha():
    class Quadratic(nn.Module):  # out_src = |x|^2 / 2  ->  grad = x_hat
        def forward(self, x):
            return 0.5 * (x ** 2).flatten(1).sum(1).view(-1, 1, 1, 1), x.flatten(1)[:, :1]

    x_real, x_fake, alpha = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2), torch.rand(5, 1, 1, 1)
    x_hat = alpha * x_real + (1 - alpha) * x_fake
    want = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert gradient_penalty(Quadratic(), x_real, x_fake, alpha).item() == pytest.approx(want.item(), rel=1e-5)


def test_d_loss_is_the_papers_sum_and_does_not_train_g():
    b = _joint_batch("celeba")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.1, JOINT.cls_dim)
    loss, logs = d_loss(Nets(G, D), b, W)
    with torch.no_grad():
        x_fake = b.x_real + 0.1 * b.c_trg.sum(1).view(-1, 1, 1, 1)
        real = -(b.x_real * D.w).flatten(1).sum(1).mean()
        fake = (x_fake * D.w).flatten(1).sum(1).mean()
        logits = b.x_real.mean((1, 2, 3))[:, None] * D.cls + D.cls
        cls = _bce(logits[:, :5], b.label_org[:, :5]).sum() / 4
        gp = (D.w.norm() - 1) ** 2
    for k, v in {"D/loss_real": real, "D/loss_fake": fake, "D/loss_cls": cls, "D/loss_gp": gp}.items():
        assert float(logs[k]) == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
    assert loss.item() == pytest.approx((real + fake + 2.0 * cls + 10.0 * gp).item(), rel=1e-5)
    loss.backward()
    assert G.b.grad is None and D.w.grad is not None  # x_fake is made without a graph through G


def test_g_loss_is_adversarial_plus_classification_plus_l1_cycle():
    b = _joint_batch("rafd")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.1, JOINT.cls_dim)
    loss, logs = g_loss(Nets(G, D), b, W)
    with torch.no_grad():
        s_trg, s_org = b.c_trg.sum(1).view(-1, 1, 1, 1), b.c_org.sum(1).view(-1, 1, 1, 1)  # 2 each (label + mask)
        x_fake = b.x_real + 0.1 * s_trg
        fake = -(x_fake * D.w).flatten(1).sum(1).mean()
        z = (x_fake.mean((1, 2, 3))[:, None] * D.cls + D.cls)[:, 5:13]
        t = b.label_trg[:, 5:13].argmax(1)
        cls = -(z[torch.arange(4), t] - torch.log(torch.exp(z).sum(1))).mean()
        rec = (0.1 * (s_trg + s_org)).abs().mean()  # x_rec = x_real + b*(s_trg + s_org)
    assert float(logs["G/loss_fake"]) == pytest.approx(fake.item(), rel=1e-5)
    assert float(logs["G/loss_cls"]) == pytest.approx(cls.item(), rel=1e-5)
    assert float(logs["G/loss_rec"]) == pytest.approx(rec.item(), rel=1e-5)
    assert rec.item() == pytest.approx(0.4, rel=1e-5)
    assert loss.item() == pytest.approx((fake + 10.0 * rec + 2.0 * cls).item(), rel=1e-5)
    loss.backward()
    assert G.b.grad is not None and math.isfinite(G.b.grad.item())


def test_identity_loss_is_off_by_default_and_adds_lambda_id_times_l1_to_x_when_on():
    b = _joint_batch("rafd")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.1, JOINT.cls_dim)
    base, logs = g_loss(Nets(G, D), b, W)
    assert "G/loss_id" not in logs
    loss, logs = g_loss(Nets(G, D), b, TrainConfig(lambda_cls=2.0, lambda_id=5.0))
    idt = (0.1 * b.c_org.sum(1)).mean()  # G(x, c_org) = x + 0.1 * sum(c_org): |x - G(x, c_org)| = 0.2
    assert float(logs["G/loss_id"]) == pytest.approx(idt.item(), rel=1e-5) == 0.2
    assert loss.item() == pytest.approx(base.item() + 5.0 * 0.2, rel=1e-5)


def test_keep_loss_adds_lambda_keep_times_l1_to_the_release_translation_and_needs_one():
    b = _joint_batch("celeba")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.1, JOINT.cls_dim)
    w = TrainConfig(lambda_cls=2.0, lambda_keep=3.0)
    base, logs = g_loss(Nets(G, D), b, w)
    assert "G/loss_keep" not in logs  # no release translation in the batch: nothing to keep
    b.x_keep = b.x_real + 0.25  # G(x, c_trg) = x + 0.1 * sum(c_trg)
    loss, logs = g_loss(Nets(G, D), b, w)
    keep = (0.1 * b.c_trg.sum(1).view(-1, 1, 1, 1) - 0.25).abs().mean()
    assert float(logs["G/loss_keep"]) == pytest.approx(keep.item(), rel=1e-5)
    assert loss.item() == pytest.approx(base.item() + 3.0 * keep.item(), rel=1e-5)


def test_losses_are_pure_same_inputs_same_outputs():
    b = _joint_batch("celeba")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4), JOINT.cls_dim)
    assert d_loss(Nets(G, D), b, W)[0].item() == d_loss(Nets(G, D), b, W)[0].item()
    assert g_loss(Nets(G, D), b, W)[0].item() == g_loss(Nets(G, D), b, W)[0].item()


# ----- StarGAN v2's non-saturating loss with R1 (adv_loss="ns-r1") ------------------------------------------------
def test_r1_of_a_linear_critic_is_half_the_squared_norm_of_its_weights_and_trains_them():
    w = torch.randn(1, 3, 4, 4)
    D = LinearD(w, 5)
    x_real = torch.randn(6, 3, 4, 4).requires_grad_(True)
    r1 = r1_penalty(D(x_real)[0], x_real)
    assert r1.item() == pytest.approx(0.5 * w.pow(2).sum().item(), rel=1e-5)  # grad_x <w, x> = w for every image
    r1.backward()  # d/dw 0.5 ||w||^2 = w: the penalty is differentiable in D's weights (create_graph)
    assert torch.allclose(D.w.grad, w, atol=1e-6)


def test_r1_is_a_per_image_squared_norm_averaged_over_the_batch():
    class Quadratic(nn.Module):  # out_src = |x|^2 / 2 per image  ->  grad = x
        def forward(self, x):
            return 0.5 * (x ** 2).flatten(1).sum(1).view(-1, 1, 1, 1), x.flatten(1)[:, :1]

    x_real = torch.randn(5, 3, 2, 2).requires_grad_(True)
    want = 0.5 * (x_real.detach() ** 2).flatten(1).sum(1).mean()
    assert r1_penalty(Quadratic()(x_real)[0], x_real).item() == pytest.approx(want.item(), rel=1e-5)


def test_ns_r1_d_loss_is_bce_on_real_and_fake_logits_plus_r1_and_has_no_gradient_penalty():
    b = _joint_batch("celeba")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.3, JOINT.cls_dim)
    loss, logs = d_loss(Nets(G, D), b, W_NS)
    with torch.no_grad():
        x_fake = b.x_real + 0.1 * b.c_trg.sum(1).view(-1, 1, 1, 1)
        z_real = (b.x_real * D.w).flatten(1).sum(1)
        z_fake = (x_fake * D.w).flatten(1).sum(1)
        real = F.binary_cross_entropy_with_logits(z_real, torch.ones(4))  # real -> 1
        fake = F.binary_cross_entropy_with_logits(z_fake, torch.zeros(4))  # fake -> 0
        logits = b.x_real.mean((1, 2, 3))[:, None] * D.cls + D.cls
        cls = _bce(logits[:, :5], b.label_org[:, :5]).sum() / 4
        r1 = 0.5 * D.w.pow(2).sum()
    assert set(logs) == {"D/loss_real", "D/loss_fake", "D/loss_cls", "D/loss_r1", "D/loss"}
    for k, v in {"D/loss_real": real, "D/loss_fake": fake, "D/loss_cls": cls, "D/loss_r1": r1}.items():
        assert float(logs[k]) == pytest.approx(v.item(), rel=1e-5), k
    assert loss.item() == pytest.approx((real + fake + 2.0 * cls + 0.7 * r1).item(), rel=1e-5)
    loss.backward()
    assert G.b.grad is None and D.w.grad is not None


def test_ns_r1_g_loss_is_bce_of_the_fake_logits_against_real():
    b = _joint_batch("rafd")
    G, D = ShiftG(), LinearD(torch.randn(1, 3, 4, 4) * 0.3, JOINT.cls_dim)
    loss, logs = g_loss(Nets(G, D), b, W_NS)
    _, wgan = g_loss(Nets(G, D), b, W)
    with torch.no_grad():
        x_fake = b.x_real + 0.1 * b.c_trg.sum(1).view(-1, 1, 1, 1)
        fake = F.binary_cross_entropy_with_logits((x_fake * D.w).flatten(1).sum(1), torch.ones(4))
    assert float(logs["G/loss_fake"]) == pytest.approx(fake.item(), rel=1e-5)
    for k in ("G/loss_cls", "G/loss_rec"):  # classification and reconstruction do not depend on adv_loss
        assert float(logs[k]) == float(wgan[k]), k
    assert loss.item() == pytest.approx((fake + 10.0 * logs["G/loss_rec"] + 2.0 * logs["G/loss_cls"]).item(),
                                        rel=1e-5)


def test_an_unknown_adversarial_loss_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="adv_loss must be one of 'wgan-gp', 'ns-r1', not 'hinge'"):
        TrainConfig(adv_loss="hinge")
