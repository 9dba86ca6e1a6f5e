"""Training data: ``datasets`` (CelebA, RaFD and CSV folders read into one dataset, the split, the uint8 cache),
``sampler`` (the step-seeded order) and ``pack`` (the training split as small WebP crops for a machine that takes
few MiB)."""
