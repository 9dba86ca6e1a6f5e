"""Label construction matches the paper / official code for CelebA-5, RaFD-8 and the joint mask layout."""
import pytest
import torch

from stargan_core.domains import CELEBA5, JOINT, RAFD8, DomainSchema, celeba_schema


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_sizes():
    assert (CELEBA5.c_dim, CELEBA5.cls_dim) == (5, 5)
    assert (RAFD8.c_dim, RAFD8.cls_dim) == (8, 8)
    assert (JOINT.c_dim, JOINT.cls_dim) == (15, 13)
    assert JOINT.dataset_slice("celeba") == slice(0, 5) and JOINT.dataset_slice("rafd") == slice(5, 13)


def test_celeba_paper_targets_one_hair_colour_on_binary_flipped():
    # official create_labels: a black-haired young man -> Black, Blond, Brown, Male flipped, Young flipped
    c_org = t([1, 0, 0, 1, 1])
    got = CELEBA5.paper_targets(c_org)
    assert [n for n, _ in got] == ["Black", "Blond", "Brown", "Male/Female", "Young/Old"]
    want = t([1, 0, 0, 1, 1], [0, 1, 0, 1, 1], [0, 0, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 0, 1, 0])
    assert torch.equal(torch.cat([c for _, c in got]), want)


def test_rafd_paper_targets_are_one_hot():
    got = RAFD8.paper_targets(t([0, 0, 0, 0, 1, 0, 0, 0]))
    assert [n for n, _ in got][:2] == ["Angry", "Contemptuous"] and len(got) == 8
    assert torch.equal(torch.cat([c for _, c in got]), torch.eye(8))


def test_joint_condition_zeros_the_other_dataset_and_sets_the_mask():
    labels = torch.cat([t([0, 1, 0, 0, 1]), t([0, 0, 0, 0, 0, 0, 1, 0])], 1)  # (1, 13)
    c_celeba = JOINT.condition(labels, "celeba")
    c_rafd = JOINT.condition(labels, "rafd")
    # official train_multi: [c_celeba, zero_rafd, mask_celeba=[1,0]] and [zero_celeba, c_rafd, mask_rafd=[0,1]]
    assert torch.equal(c_celeba, t([0, 1, 0, 0, 1] + [0] * 8 + [1, 0]))
    assert torch.equal(c_rafd, t([0] * 5 + [0, 0, 0, 0, 0, 0, 1, 0] + [0, 1]))
    JOINT.validate(c_celeba, condition=True)
    with pytest.raises(ValueError):
        JOINT.condition(labels)  # a joint model must be told which dataset's labels are given


def test_joint_paper_targets_cover_both_datasets():
    got = JOINT.paper_targets(torch.zeros(1, 13))
    assert len(got) == 5 + 8
    assert torch.equal(got[-1][1], t([0] * 12 + [1]))  # surprised


def test_person_choices_keep_takes_from_c_org():
    c_org = t([1, 0, 0, 1, 1])
    c_trg = CELEBA5.target(c_org, {"hair": "blond", "gender": "keep", "age": "old"})
    assert torch.equal(c_trg, t([0, 1, 0, 1, 0]))
    assert torch.equal(CELEBA5.target(c_org, {"hair": "Brown_Hair", "gender": "female"}), t([0, 0, 1, 0, 1]))
    assert torch.equal(CELEBA5.target(c_org, {"gender": True}), c_org)


def test_strength_moves_continuously_per_group():
    c_org = t([1, 0, 0, 1, 1])
    assert torch.equal(CELEBA5.target(c_org, {"hair": "blond"}, strength=0.0), c_org)
    half = CELEBA5.target(c_org, {"hair": "blond", "age": "old"}, strength={"hair": 0.5, "age": 1.0})
    assert torch.allclose(half, t([0.5, 0.5, 0, 1, 0]))


def test_bad_choices_say_what_is_allowed():
    with pytest.raises(ValueError, match="Blond"):
        CELEBA5.target(t([1, 0, 0, 1, 1]), {"hair": "purple"})
    with pytest.raises(KeyError, match="expression"):
        CELEBA5.target(t([1, 0, 0, 1, 1]), {"expression": "happy"})
    with pytest.raises(ValueError, match="shape"):
        CELEBA5.validate(torch.zeros(1, 6))
    with pytest.raises(ValueError, match="mask"):
        JOINT.validate(torch.zeros(1, 15), condition=True)


def test_changed_datasets_in_schema_order():
    assert JOINT.changed_datasets({"expression": "happy", "hair": "blond", "age": "keep"}) == ["celeba", "rafd"]
    assert JOINT.changed_datasets({"age": "keep"}) == []


def test_custom_celeba_schema_and_round_trip():
    ds = celeba_schema(["Black_Hair", "Gray_Hair", "Smiling", "Eyeglasses"])
    schema = DomainSchema((ds,))
    assert [g.name for g in schema.groups] == ["hair", "smiling", "eyeglasses"]
    assert schema.group("smiling").options() == ["Smiling", "Not smiling"]
    assert DomainSchema.from_dict(schema.to_dict()) == schema
    assert DomainSchema.from_dict(JOINT.to_dict()) == JOINT
    with pytest.raises(ValueError, match="next to each other"):
        celeba_schema(["Black_Hair", "Male", "Blond_Hair"])


def test_only_hair_colour_groups_count_as_hair_and_keep_changes_nothing():
    assert [g.is_hair_colour for g in JOINT.groups] == [True, False, False, False]  # hair, gender, age, expression
    assert [g.name for g in JOINT.changed_groups({"hair": "blond", "gender": "keep", "age": None})] == ["hair"]
    assert JOINT.changed_groups({"hair": "Keep"}) == []
