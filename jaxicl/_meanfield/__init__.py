"""The mean-field feature-attention model: measures over neurons, the feature-regression task,
the model, its n = infinity losses, the particle flow, moves between steps and the solver."""
