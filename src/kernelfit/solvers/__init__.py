"""Solvers: they consume :class:`~kernelfit.stats.SufficientStatistics`, never images."""

from .direct import DirectSolution, RankDeficientWarning, solve_normal_equations

__all__ = ["DirectSolution", "RankDeficientWarning", "solve_normal_equations"]
