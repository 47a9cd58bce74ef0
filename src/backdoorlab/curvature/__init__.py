"""Curvature of the loss: Fisher traces and diagonals (Hessians come later). Plain PyTorch, no Lightning."""
