"""The paper's figure as tensors: faces translated to every domain of a model, in one batched forward.

Training samples, the evaluation, the classroom's checker and the pipeline's all-domains figure all show the same
thing, so they all call this one function: ``DomainSchema.paper_targets`` says what each domain's target is.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..domains import DomainSchema
from .model import Generator


@torch.inference_mode()
def translate_domains(G: Generator | Callable, x_real: torch.Tensor, c_org: torch.Tensor,
                      schema: DomainSchema) -> list[tuple[str, torch.Tensor]]:
    """The paper's figure as tensors: ``x_real`` (N, 3, H, W) translated to every domain, one batched forward.

    ``G`` is the generator or a path from ``inference.py``; ``c_org`` is (N, cls_dim); returns
    [(domain name, x_fake (N, 3, H, W))] in schema order.
    """
    names, conds = [], []
    for ds in schema.datasets:
        for name, c_trg in schema.paper_targets(c_org, ds.name):
            names.append(name)
            conds.append(schema.condition(c_trg, ds.name))  # (N, c_dim)
    x_fake = G(x_real.repeat(len(conds), 1, 1, 1), torch.cat(conds))  # (D*N, 3, H, W)
    return list(zip(names, x_fake.chunk(len(conds)), strict=True))
