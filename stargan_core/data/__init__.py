"""Training data: ``datasets`` (CelebA, RaFD and CSV folders read into one dataset, the split, the step-seeded sampler,
the uint8 cache) and ``pack`` (the training split as small WebP crops for a machine that takes few MiB)."""
