"""Training: the loss registry, the iteration-based loop with its poly schedule and mixed precision, and the training
state that lets a run resume exactly (``state``). May import ``core``, ``config``,
``data`` and ``models``."""
