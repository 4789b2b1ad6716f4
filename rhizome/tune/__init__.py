"""Hyperparameter tuning of the training stage (``tune.py``): search space, objective, study, report."""
