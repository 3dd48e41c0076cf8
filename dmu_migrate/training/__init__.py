"""Training of the new model and the forward adapter (needs the ``train`` extra)."""
