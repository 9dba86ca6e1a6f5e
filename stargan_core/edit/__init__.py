"""Editing a person's photo: ``images`` (uploads in, results out), ``geometry`` (the face's transforms),
``faces`` (the detector), ``blend`` (paste-back), ``inference`` / ``threads`` / ``classify`` (running the nets fast
on a CPU), ``pipeline`` (the one inference call), ``tracking`` (faces in a video) and ``prepare`` (photos -> an
aligned training folder, with the same face code)."""
