"""Matching: Matcher and its results, the spectral maths, the FFT backend and
the matching kernels (numpy and compiled).
"""
