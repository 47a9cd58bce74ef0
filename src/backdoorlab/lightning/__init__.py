"""LightningModules that run backdoor training and purification."""
