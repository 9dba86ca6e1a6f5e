"""The page's controls as the edit endpoint receives them: one choice and one strength per group of the schema.

A program can call the ``edit`` endpoint with values the page never sends (a colour that does not exist, a
strength of 100); ``read_controls`` refuses each with a sentence that says what is allowed, and turns the rest into
the pipeline's ``choices``, ``strength`` and ``current``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import gradio as gr

from stargan_core.domains import KEEP, DomainSchema, Group

NOT_SURE = "Not sure"  # the "what the face is now" choice that leaves the estimate alone
MAX_STRENGTH = 1.5  # the strength sliders' range is 0..MAX_STRENGTH


def group_title(g: Group) -> str:
    """The label of a group's control: 'hair' -> 'Hair colour', 'eyeglasses' -> 'Eyeglasses'."""
    return {"hair": "Hair colour"}.get(g.name, g.name.replace("_", " ").capitalize())


def api_name(g: Group) -> str:
    """A Python-identifier name for a group's parameter in the API ('Mouth_Slightly_Open' -> 'mouth_slightly_open')."""
    return "".join(ch if ch.isalnum() else "_" for ch in g.name.lower())


def read_controls(schema: DomainSchema, values: Mapping[str, object]) -> tuple[dict, dict, dict]:
    """Control values keyed by API name (``hair``, ``hair_strength``, ``now_hair``, ...) -> the pipeline's
    ``choices``, ``strength`` and ``current`` (what a person says a face is now, for models without D).

    A value the page cannot send (an unknown option, a strength that is not a number from 0 to 1.5) is refused
    with a sentence that says what is allowed."""
    choices, strength, current = {}, {}, {}
    for g in schema.groups:
        name, title = api_name(g), group_title(g)
        choices[g.name] = _option(values.get(name), ["Keep", *g.options()], title) or KEEP
        strength[g.name] = _strength(values.get(f"{name}_strength"), title)
        now = _option(values.get(f"now_{name}"), [NOT_SURE, *g.options()], f"What the face is now ({title})")
        if now not in (None, NOT_SURE):
            current[g.name] = now
    return choices, strength, current


def _option(value: object, allowed: list[str], title: str) -> str | None:
    """``value`` if it is one of ``allowed`` (any letter case), None when not given; else a one-sentence error."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value.lower() not in {a.lower() for a in allowed}:
        raise gr.Error(f"{title} must be one of {', '.join(allowed)}.", print_exception=False)
    return value


def _strength(value: object, title: str) -> float:
    """A strength from 0 to MAX_STRENGTH (1.0 when not given); anything else is a one-sentence error."""
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_STRENGTH \
            or math.isnan(value):
        raise gr.Error(f"{title} strength must be a number from 0 to {MAX_STRENGTH}.", print_exception=False)
    return float(value)
