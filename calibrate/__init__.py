"""Calibration: measuring what the planner takes as given, on the real link."""
