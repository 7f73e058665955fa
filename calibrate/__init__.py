"""Calibration: measuring what the planner takes as given (the link between device and edge)."""
