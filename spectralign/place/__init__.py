"""Placement: the tile graph of matches, its sparse least-squares solver and
robust rejection, and the result with its quality figures.
"""
