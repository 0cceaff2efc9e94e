"""Data for training: which samples a run reads (:mod:`.selection`), the batch stream from a store
(:mod:`.stream`, with :mod:`.worker_batch` for loader workers), and augmentation on the training
device (:mod:`.augment`)."""
