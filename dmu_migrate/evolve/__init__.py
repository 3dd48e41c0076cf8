"""The evolve path: stored old vectors -> adapter -> evolved vectors, written back.

This package must not import torch: the cron image carries only onnxruntime,
numpy and the store clients.
"""
