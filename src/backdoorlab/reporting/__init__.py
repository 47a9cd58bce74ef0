"""Result tables (and, later, plots)."""
