"""The training loop (``loop.train``) and the run's state on disk (``state``: one checkpoint dict, written
atomically). Nothing here imports the editing stack (``edit/``): the loop trains without a face detector."""
