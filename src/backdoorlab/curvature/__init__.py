"""Curvature of the loss, plain PyTorch (no Lightning, no Hydra): Fisher traces and diagonals for
FIP (:mod:`.fisher`), Hessian / GGN / Fisher-vector products on sharded data (:mod:`.operators`),
top eigenvalues, traces and spectral densities from those products (:mod:`.spectrum`), and local
process groups to run them on several processes (:mod:`.processes`)."""
