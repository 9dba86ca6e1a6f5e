"""The networks and their objectives: ``model`` (G and D, layer for layer as the paper), ``losses`` (eqs. 1-7 as pure
functions) and ``translate`` (G applied to every domain: the paper's figure as tensors)."""
