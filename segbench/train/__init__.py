"""Training: the loss registry and the iteration-based loop with its poly schedule. May import ``core``, ``config``,
``data`` and ``models``."""
