"""Optimizers the trainer records flow time with."""

import optax


def sgd(learning_rate) -> optax.GradientTransformation:
    """Plain SGD (`optax.sgd`) with its learning rate exposed, so the trainer records Σ lr."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=learning_rate)
