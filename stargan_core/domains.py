"""The domain schema: what each position of StarGAN's label vector means.

StarGAN conditions one generator on a label vector ``c`` tiled as extra input channels. This module is the
single source of truth for that vector's layout. A schema is a list of datasets; each dataset is a list of
groups; each group owns consecutive positions of the vector:

* ``exclusive``   - several CelebA attributes of which at most one is on (hair colour). Trained with binary
  cross-entropy, like any CelebA attribute, but a *target* always switches exactly one on.
* ``binary``      - one attribute, on or off (Male, Young). A paper test target flips it.
* ``categorical`` - one class out of several (RaFD's 8 expressions). Trained with cross-entropy.

With more than one dataset the vector ends with a one-hot **mask** saying which dataset's labels are known
(paper section 3.2): the joint CelebA+RaFD layout is ``[celeba(5) | rafd(8) | mask(2)]``, so ``c_dim`` is 15
while the discriminator predicts the 13 labels. Throughout, "labels" means the mask-free ``(N, cls_dim)`` part
and "condition" means the full ``(N, c_dim)`` vector the generator receives.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

KEEP = "keep"
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
RAFD_EXPRESSIONS = ("angry", "contemptuous", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
LONDON_EXPRESSIONS = ("neutral", "smiling")  # the Face Research Lab London Set (``prepare`` writes this group)
# Friendly group names and on/off words for the CelebA attributes people toggle most.
_BINARY_WORDS = {"Male": ("gender", "Male", "Female"), "Young": ("age", "Young", "Old")}


def _changed(choices: Mapping[str, object]) -> set[str]:
    """The names of the groups that ``choices`` set to something other than keep."""
    return {n for n, v in choices.items() if v is not None and not (isinstance(v, str) and v.lower() == KEEP)}


@dataclass(frozen=True)
class Group:
    """Consecutive label positions that a person sets with one control."""

    name: str  # the control's name: "hair", "gender", "expression", ...
    kind: str  # "exclusive" | "binary" | "categorical"
    labels: tuple[str, ...]  # attribute / class names, in vector order
    on: str = ""  # binary only: the word for 1 ("Male"), and for 0 ("Female")
    off: str = ""

    @property
    def is_hair_colour(self) -> bool:
        """A group of CelebA's hair colours (``HAIR_COLOURS``): its edits belong on the hair, not on the face."""
        return all(lab in HAIR_COLOURS for lab in self.labels)

    def options(self) -> list[str]:
        """The values a person may choose, besides ``"keep"``."""
        return [self.on, self.off] if self.kind == "binary" else [pretty(lab) for lab in self.labels]


@dataclass(frozen=True)
class DatasetSpec:
    """One training dataset and the groups it labels."""

    name: str
    groups: tuple[Group, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(lab for g in self.groups for lab in g.labels)


@dataclass(frozen=True)
class DomainSchema:
    """The label-vector layout of a model: datasets -> groups -> labels (+ mask when joint)."""

    datasets: tuple[DatasetSpec, ...]
    _slices: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        slices, start = {}, 0
        for ds in self.datasets:
            for g in ds.groups:
                slices[g.name] = (ds.name, start, start + len(g.labels))
                start += len(g.labels)
        if len(slices) != sum(len(ds.groups) for ds in self.datasets):
            raise ValueError("group names must be unique across datasets")
        object.__setattr__(self, "_slices", slices)

    # ----- sizes and lookup -------------------------------------------------------------------------------
    @property
    def cls_dim(self) -> int:
        """Number of labels the discriminator predicts (no mask)."""
        return sum(len(ds.labels) for ds in self.datasets)

    @property
    def c_dim(self) -> int:
        """Length of the generator's condition vector (labels + mask when there are several datasets)."""
        return self.cls_dim + (len(self.datasets) if len(self.datasets) > 1 else 0)

    @property
    def groups(self) -> list[Group]:
        return [g for ds in self.datasets for g in ds.groups]

    @property
    def labels(self) -> list[str]:
        return [lab for ds in self.datasets for lab in ds.labels]

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"this model has no '{name}' control; it has: {', '.join(g.name for g in self.groups)}")

    def group_slice(self, name: str) -> slice:
        _, a, b = self._slices[name]
        return slice(a, b)

    def dataset_slice(self, dataset: str) -> slice:
        spans = [(a, b) for ds, a, b in self._slices.values() if ds == dataset]
        if not spans:
            raise KeyError(f"unknown dataset '{dataset}'")
        return slice(spans[0][0], spans[-1][1])

    def dataset_of(self, group: str) -> str:
        return self._slices[group][0]

    # ----- labels -> condition ----------------------------------------------------------------------------
    def condition(self, labels: torch.Tensor, dataset: str | None = None) -> torch.Tensor:
        """(N, cls_dim) labels -> (N, c_dim) generator condition for ``dataset``.

        Joint models only know one dataset's labels at a time: the other blocks are zeroed and the mask
        marks ``dataset`` (the official ``train_multi``/``test_multi`` layout).
        """
        if len(self.datasets) == 1:
            return labels
        if dataset is None:
            raise ValueError("a joint model needs the dataset whose labels are given")
        keep = torch.zeros_like(labels)
        sl = self.dataset_slice(dataset)
        keep[:, sl] = labels[:, sl]
        mask = torch.zeros(labels.shape[0], len(self.datasets), dtype=labels.dtype, device=labels.device)
        mask[:, [d.name for d in self.datasets].index(dataset)] = 1
        return torch.cat([keep, mask], dim=1)  # (N, c_dim)

    # ----- a person's choices -> target labels --------------------------------------------------------------
    def target(self, c_org: torch.Tensor, choices: Mapping[str, object],
               strength: float | Mapping[str, float] = 1.0) -> torch.Tensor:
        """Target labels from the face's own labels ``c_org`` (N, cls_dim) and a person's choices.

        ``choices`` maps a group name to ``"keep"`` (take it from ``c_org``), an option from
        ``Group.options()`` or a label name, or a bool for binary groups. ``strength`` (one number or one per
        group) moves each changed group from ``c_org`` (0) to the chosen value (1), or a little beyond.
        """
        c_trg = c_org.clone()
        for name, value in choices.items():
            g = self.group(name)
            if value is None or (isinstance(value, str) and value.lower() == KEEP):
                continue
            s = strength.get(name, 1.0) if isinstance(strength, Mapping) else strength
            sl = self.group_slice(name)
            want = torch.zeros(len(g.labels), dtype=c_org.dtype, device=c_org.device)
            want[self._option_index(g, value)] = 1.0
            if g.kind == "binary" and not _is_on(g, value):
                want.zero_()
            c_trg[:, sl] = c_org[:, sl] + s * (want - c_org[:, sl])
        return c_trg

    def changed_datasets(self, choices: Mapping[str, object]) -> list[str]:
        """Datasets (in schema order) with at least one group not set to keep."""
        touched = {self.dataset_of(n) for n in _changed(choices)}
        return [ds.name for ds in self.datasets if ds.name in touched]

    def changed_groups(self, choices: Mapping[str, object]) -> list[Group]:
        """Groups (in schema order) that ``choices`` set to something other than keep."""
        touched = _changed(choices)
        return [g for g in self.groups if g.name in touched]

    def _option_index(self, g: Group, value: object) -> int:
        if g.kind == "binary":
            _is_on(g, value)  # validates
            return 0
        key = str(value).lower().replace(" ", "_")
        for i, lab in enumerate(g.labels):
            if key in (lab.lower(), pretty(lab).lower().replace(" ", "_")):
                return i
        raise ValueError(f"'{value}' is not a choice for {g.name}; choose one of: keep, {', '.join(g.options())}")

    # ----- the paper's test targets -----------------------------------------------------------------------
    def paper_targets(self, c_org: torch.Tensor, dataset: str | None = None) -> list[tuple[str, torch.Tensor]]:
        """One (name, target labels) per domain of ``dataset``, as in the paper's figures.

        Exclusive groups: this label on, the rest of the group off. Binary: flipped. Categorical: one-hot.
        """
        ds_names = [dataset] if dataset else [d.name for d in self.datasets]
        out = []
        for ds in (d for d in self.datasets if d.name in ds_names):
            for g in ds.groups:
                sl = self.group_slice(g.name)
                for i, lab in enumerate(g.labels):
                    c_trg = c_org.clone()
                    if g.kind == "binary":
                        c_trg[:, sl] = (c_org[:, sl] < 0.5).to(c_org.dtype)
                        name = f"{g.on}/{g.off}"
                    else:
                        c_trg[:, sl] = 0
                        c_trg[:, sl.start + i] = 1
                        name = pretty(lab)
                    out.append((name, c_trg))
        return out

    def validate(self, c: torch.Tensor, *, condition: bool = False) -> None:
        """Raise ValueError unless ``c`` is a well-formed (N, cls_dim) label or (N, c_dim) condition tensor."""
        want = self.c_dim if condition else self.cls_dim
        if c.ndim != 2 or c.shape[1] != want:
            raise ValueError(f"expected labels of shape (N, {want}), got {tuple(c.shape)}")
        if not torch.isfinite(c).all():
            raise ValueError("labels contain NaN or inf")
        for g in self.groups:
            block = c[:, self.group_slice(g.name)]
            if g.kind == "categorical" and condition is False and not torch.all(block.sum(1) <= 1 + 1e-6):
                raise ValueError(f"{g.name}: a categorical group must sum to at most 1")
        if condition and len(self.datasets) > 1:
            mask = c[:, self.cls_dim:]
            if not torch.all((mask == 0) | (mask == 1)) or not torch.all(mask.sum(1) == 1):
                raise ValueError("the mask vector must be one-hot")

    # ----- serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"datasets": [{"name": ds.name, "groups": [
            {"name": g.name, "kind": g.kind, "labels": list(g.labels), **({"on": g.on, "off": g.off}
                                                                         if g.kind == "binary" else {})}
            for g in ds.groups]} for ds in self.datasets]}

    @classmethod
    def from_dict(cls, d: Mapping) -> DomainSchema:
        return cls(tuple(DatasetSpec(ds["name"], tuple(Group(g["name"], g["kind"], tuple(g["labels"]),
                                                             g.get("on", ""), g.get("off", ""))
                                                       for g in ds["groups"]))
                         for ds in d["datasets"]))


def pretty(label: str, alone: bool = False) -> str:
    """A label in words: 'Blond_Hair' -> 'Blond' (an option of the hair control), 'Mouth_Slightly_Open' -> 'Mouth
    Slightly Open', 'happy' -> 'Happy'; ``alone`` (a label shown without its control) -> 'Blond hair', 'Mouth
    slightly open'."""
    words = label.replace("_", " ").lower() if alone else label.removesuffix("_Hair").replace("_", " ")
    return words[:1].upper() + words[1:]


def _is_on(g: Group, value: object) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).lower()
    if v in (g.on.lower(), g.labels[0].lower(), "1", "true", "yes", "on"):
        return True
    if v in (g.off.lower(), "0", "false", "no", "off"):
        return False
    raise ValueError(f"'{value}' is not a choice for {g.name}; choose one of: keep, {g.on}, {g.off}")


def celeba_schema(attrs: Sequence[str], name: str = "celeba") -> DatasetSpec:
    """A CelebA dataset over any attribute list: hair colours form one exclusive group, the rest are binary."""
    hair = tuple(a for a in attrs if a in HAIR_COLOURS)
    groups, hair_done = [], False
    for a in attrs:
        if a in HAIR_COLOURS:
            if not hair_done:
                groups.append(Group("hair", "exclusive", hair))
                hair_done = True
        else:
            words = a.replace("_", " ")
            gname, on, off = _BINARY_WORDS.get(a, (a.lower(), words.capitalize(), "Not " + words.lower()))
            groups.append(Group(gname, "binary", (a,), on, off))
    if [lab for g in groups for lab in g.labels] != list(attrs):
        raise ValueError("hair-colour attributes must be listed next to each other, e.g. Black_Hair Blond_Hair ...")
    return DatasetSpec(name, tuple(groups))


def rafd_schema(name: str = "rafd") -> DatasetSpec:
    """RaFD's 8 expressions as one categorical group (class order fixed here, not by the file system)."""
    return DatasetSpec(name, (Group("expression", "categorical", RAFD_EXPRESSIONS),))


def london_schema(name: str = "london") -> DatasetSpec:
    """The London set's two expressions as one categorical group."""
    return DatasetSpec(name, (Group("expression", "categorical", LONDON_EXPRESSIONS),))


CELEBA5_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
CELEBA5 = DomainSchema((celeba_schema(CELEBA5_ATTRS),))
RAFD8 = DomainSchema((rafd_schema(),))
JOINT = DomainSchema((celeba_schema(CELEBA5_ATTRS), rafd_schema()))  # the paper's CelebA + RaFD
JOINT_LONDON = DomainSchema((celeba_schema(CELEBA5_ATTRS), london_schema()))  # the shipped model's
