"""A toy world for lessons and tests: two labelled datasets of shapes whose domains can be read off the pixels.

``shapes``: squares labelled by colour (an exclusive group, like hair colour) and size (a binary attribute, like
age); a quarter of them are white, a colour no label names (as CelebA has people with none of its hair colours).
``forms``: white shapes labelled only by their form (a categorical group, like RaFD's expressions). Their label
sets differ, so they train jointly through the mask vector, exactly as CelebA + RaFD do. Every shape sits at a
random place that no label mentions, so a generator must carry it over from its input. The unlabelled white
squares are there so that no attribute is varied by one dataset and never seen labelled by the other's classifier:
D learns that white is none of red, green or blue, and a form's colour is never in question (the worlds that
failed without them: ``docs/EXPERIMENTS.md``). ``ShapeWorld.measure`` is the analytic checker: it reads colour,
size, form and position back from any image; ``judge`` scores a generator's translations with it.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from PIL import Image

from ..domains import DomainSchema
from ..nets.model import Generator
from ..nets.translate import translate_domains

COLOURS, FORMS = ("red", "green", "blue"), ("square", "hbar", "vbar")


def draw(colour: int, w: int, h: int, dx: int, dy: int, size: int) -> torch.Tensor:
    """A w x h rectangle of a pure colour (0 red, 1 green, 2 blue, 3 white) on grey, centred + (dx, dy)."""
    x = torch.zeros(3, size, size)  # (3, S, S) in [-1, 1]
    rgb = torch.ones(3) if colour == 3 else -torch.ones(3)
    rgb[colour % 3] = 1
    top, left = size // 2 - h // 2 + dy, size // 2 - w // 2 + dx
    x[:, top:top + h, left:left + w] = rgb.view(3, 1, 1)
    return x


class ShapeWorld:
    """Draws, writes and judges the two datasets at ``size`` x ``size`` pixels (16 or 32)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.small, self.big = (size // 4, size // 2)  # 4 and 8 px sides at 16 px
        self.forms = [(7, 7), (11, 4), (4, 11)] if size == 16 else [(12, 12), (18, 6), (6, 18)]
        self.area_big = (self.small ** 2 + self.big ** 2) / 2  # area threshold between small and big
        self.jitter = size // 6  # the shape's offset from the centre: a wide spread, so that D notices a G
        # that puts every shape in the middle (with +-2 px, some seeds learnt just that)

    def sample(self, which: str, g: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        dx, dy = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=g).tolist()
        if which == "shapes":  # red, green, blue or (unlabelled) white: see the module docstring
            colour = int(torch.randint(4, (1,), generator=g))
            big = int(torch.randint(2, (1,), generator=g))
            side = self.big if big else self.small
            return draw(colour, side, side, dx, dy, self.size), [int(k == colour) for k in range(3)] + [big]
        form = int(torch.randint(3, (1,), generator=g))
        return draw(3, *self.forms[form], dx, dy, self.size), [int(k == form) for k in range(3)]

    def write(self, folder: Path, which: str, n: int, seed: int) -> str:
        """An on-disk CSV dataset (PNG files + labels.csv + schema.json) for ``train``."""
        folder.mkdir(parents=True)
        g, rows = torch.Generator().manual_seed(seed), []
        for i in range(n):
            x, labels = self.sample(which, g)
            Image.fromarray(((x + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
            rows.append([f"{i}.png", *labels])
        header = ["filename", *COLOURS, "big"] if which == "shapes" else ["filename", *FORMS]
        with open(folder / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
        groups = ([{"name": "colour", "kind": "exclusive", "labels": list(COLOURS)},
                   {"name": "size", "kind": "binary", "labels": ["big"], "on": "big", "off": "small"}]
                  if which == "shapes" else [{"name": "form", "kind": "categorical", "labels": list(FORMS)}])
        (folder / "schema.json").write_text(json.dumps({"name": which, "groups": groups}))
        return str(folder)

    def measure(self, y: torch.Tensor) -> dict:
        """Read colour, area, form and centre off an image (3, S, S) in [-1, 1]: the analytic checker."""
        bg = torch.cat([y[:, 0], y[:, -1], y[:, :, 0], y[:, :, -1]], 1).median(1).values  # (3,) border colour
        fg = (y - bg.view(3, 1, 1)).abs().amax(0) > 0.5  # (S, S) pixels far from the background
        if fg.sum() < 3:
            return dict(colour=None, big=None, form=None, cx=-99.0, cy=-99.0)
        h, w = int((fg.sum(1) >= 2).sum()), int((fg.sum(0) >= 2).sum())  # rows / columns the shape spans
        ys, xs = fg.nonzero(as_tuple=True)
        rgb = y[:, fg].mean(1)  # (3,) mean colour of the shape
        return dict(colour=3 if rgb.min() > 0.3 else int(rgb.argmax()), big=bool(fg.sum() > self.area_big),
                    form="hbar" if w > 1.6 * h else "vbar" if h > 1.6 * w else "square",
                    cx=float(xs.float().mean()), cy=float(ys.float().mean()))


def judge(world: ShapeWorld, G: Generator, schema: DomainSchema, which: str, n: int = 60,
          seed: int = 99, reconstruction: bool = True) -> tuple[dict[str, float], float]:
    """Translate ``n`` fresh images of ``which`` to every domain and judge each from its pixels.

    A translation is correct when the target attribute is met and the untouched ones (colour, size, form, place
    within 2 px) are kept. Returns {"dataset:domain": share correct} (``which``'s own domains first) and the mean
    L1 of the reconstruction G(G(x, c_trg), c_org) over the own domains, in [-1, 1] units (nan with
    ``reconstruction=False``, which skips its two passes of G per domain: half of the judging, which the lesson
    does every few seconds and does not show).
    """
    g = torch.Generator().manual_seed(seed)
    xs, labels = zip(*(world.sample(which, g) for _ in range(n)), strict=True)
    device = next(G.parameters()).device
    x, c_org = torch.stack(xs).to(device), torch.zeros(n, schema.cls_dim, device=device)
    c_org[:, schema.dataset_slice(which)] = torch.tensor(labels, dtype=torch.float32)
    before = [world.measure(xi) for xi in x.cpu()]
    scores, recs = {}, []
    for (name, x_fake), (_, c_trg) in zip(translate_domains(G, x, c_org, schema),
                                          schema.paper_targets(c_org), strict=True):
        hits = 0
        for i, m0 in enumerate(before):
            m, want, keys = world.measure(x_fake[i].float().cpu()), dict(m0), ["colour", "big", "form"]
            if name in ("Red", "Green", "Blue"):
                want["colour"] = ("Red", "Green", "Blue").index(name)
            elif name.lower() == "big/small":
                want["big"] = not m0["big"]
            else:  # a form sets its own size
                want["form"], keys = name.lower(), ["colour", "form"]
            hits += all(m[k] == want[k] for k in keys) and abs(m["cx"] - m0["cx"]) <= 2 and abs(m["cy"] - m0["cy"]) <= 2
        ds = "shapes" if name in ("Red", "Green", "Blue") or name.lower() == "big/small" else "forms"
        scores[f"{ds}:{name.lower()}"] = hits / n
        if ds == which and reconstruction:
            with torch.inference_mode():
                x_rec = G(G(x, schema.condition(c_trg, ds)), schema.condition(c_org, ds))
            recs.append(float((x_rec - x).abs().mean()))
    return scores, sum(recs) / len(recs) if recs else float("nan")
