"""Training and scoring runs: the configuration, the engine (one step, one epoch, one evaluation),
run directories, the protocol that decides which samples train, choose the epoch and are
reported, cross-validation, evaluation of a checkpoint, checkpoints and metrics."""
