"""backdoorlab: train backdoored image classifiers and purify them."""

__version__ = "0.1.0"
