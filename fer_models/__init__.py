"""PyTorch side: loading guidance tensors from a store and training guided FER models."""
