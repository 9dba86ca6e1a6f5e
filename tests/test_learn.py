"""The watch-it-learn runner: one run per server, stoppable, and what a watcher sees (losses, figure, checker)."""
import torch

from stargan_core.classroom.learn import Knobs, Lesson, fixed_inputs, paper_figure
from stargan_core.classroom.shapes import ShapeWorld
from stargan_core.domains import DatasetSpec, DomainSchema, Group
from stargan_core.nets.model import Generator


def test_a_short_run_shows_losses_a_figure_and_per_domain_accuracy_and_refuses_a_second_start(tmp_path):
    lesson = Lesson(check_every=0.0, loss_every=5, n_judge=6)
    assert lesson.start(Knobs(steps=20), tmp_path) is None
    refused = lesson.start(Knobs(steps=20))
    assert refused is not None and refused.startswith("A class is training right now: wait about")
    p = lesson.wait(120)
    assert (p.state, p.step, p.message) == ("done", 20, "done after 20 steps")
    assert sorted({row["loss"] for row in p.losses}) == ["adversarial", "classification", "reconstruction"]
    assert [row["step"] for row in p.losses if row["loss"] == "reconstruction"] == [5, 10, 15, 20]
    assert list(p.accuracy) == ["shapes: red", "shapes: green", "shapes: blue", "shapes: big/small",
                                "forms: square", "forms: hbar", "forms: vbar"]
    assert all(0 <= v <= 1 for v in p.accuracy.values()) and p.checks[-1][1] == 20
    assert p.figure.size == (8 * 96, 8 * 96 + 14)  # 4 + 4 inputs x (input + 7 domains), 3x enlarged, + names
    assert lesson.start(Knobs(steps=10), tmp_path) is None  # a finished run frees the server for the next class
    lesson.wait(120)


def test_stop_ends_the_run_early():
    lesson = Lesson(check_every=1e9)
    lesson.start(Knobs(steps=3000))
    lesson.stop()
    p = lesson.wait(120)
    assert p.state == "stopped" and p.step < 3000 and p.accuracy  # the final check still runs


def test_the_figure_shows_the_input_in_its_first_column():
    world = ShapeWorld(32)
    fixed = fixed_inputs(world)
    G = Generator(8, 9, 1)
    schema = DomainSchema((DatasetSpec("shapes", (Group("colour", "exclusive", ("red", "green", "blue")),
                                                  Group("size", "binary", ("big",), on="big", off="small"))),
                           DatasetSpec("forms", (Group("form", "categorical", ("square", "hbar", "vbar")),))))
    im = paper_figure(G, schema, fixed)
    x0 = torch.tensor(list(im.crop((0, 14, 96, 14 + 96)).resize((32, 32), 0).getdata()), dtype=torch.float32)
    want = ((fixed[0][1][0] + 1) * 127.5).permute(1, 2, 0).reshape(-1, 3)
    assert torch.allclose(x0, want, atol=1)
