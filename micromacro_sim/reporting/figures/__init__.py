"""Figures of a run: rates per cell, percent bias, nested-loop and zip plots, published values.

Every function draws one PNG file and returns its path (matplotlib, optional). Error bars
are +/- 2 Monte Carlo SEs (Morris, White & Crowther 2019).
"""
