"""Offline replay of bags into the detector, and its report."""
