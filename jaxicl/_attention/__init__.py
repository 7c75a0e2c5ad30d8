"""Multi-head attention: models, inits and init schemes, the decomposable ansatz, the reduced
(Omega, M) loss, observables, allocation analysis and reference predictors."""
