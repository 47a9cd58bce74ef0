"""Adaptive attacks: backdoor training that knows the defense (``adaptive=<name>``, any attack). Each
object's ``loss(model, x, y, objective, step)`` turns the training objective on the poisoned, augmented batch
(``objective()``: cross-entropy plus the attack's own term) into the loss the classifier steps on; ``step`` is the
run's global step (a resumed run goes on counting from where it stopped)."""
