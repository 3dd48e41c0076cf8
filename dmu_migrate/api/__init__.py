"""The verbs of dmu-migrate as plain functions (docs/api.md); the command line wraps them.

Each verb takes keyword arguments named like its command's options, with the
same defaults, returns a dataclass, raises the error tree of errors.py and
never prints. ``dmu_migrate`` re-exports them lazily, so importing the package
costs nothing and the evolve path never imports torch.
"""
