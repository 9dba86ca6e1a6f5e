"""Judging a generator the paper's way: ``classifier`` (the attribute judge, trained on real images only),
``evaluate`` (target accuracy, preservation, reconstruction) and ``expression`` (smile edits judged by CelebA's
Smiling)."""
