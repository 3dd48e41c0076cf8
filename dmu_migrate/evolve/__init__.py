"""The evolve path: stored old vectors -> adapter -> evolved vectors, written back.

This package must not import torch: the cron image carries only onnxruntime,
numpy and the store clients.
"""

# The strategies by name, here so that the command line can show them without
# importing the whole evolve path (onnxruntime) for --help.
NEW_COLLECTION, NEW_FIELD, IN_PLACE = "new-collection", "new-field", "in-place"
STRATEGIES = (NEW_COLLECTION, NEW_FIELD, IN_PLACE)
# How the main pass writes (evolve/bulk_pass.py) and where shards run (api/sharding.py).
INSERT, BULK, AUTO = "insert", "bulk", "auto"
WRITE_PATHS = (INSERT, BULK, AUTO)
ENGINES = ("local", "ray")
