"""Adaptive attacks: backdoor training that knows the defense (``adaptive=<name>``, any attack). Each
object's ``loss(model, x, y, objective)`` turns the training objective on the poisoned, augmented batch
(``objective()``: cross-entropy plus the attack's own term) into the loss the classifier steps on."""
