"""Sub-commands of the ``gridledger`` CLI, one module per area.

Each module exposes ``register(subparsers)``; it must import only argparse-level things at module
import time (heavy imports go inside the handlers) so that ``gridledger --help`` stays fast.
"""
