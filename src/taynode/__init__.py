"""taynode: Taylor-mode regularisation of neural ODEs ("Learning Differential Equations that are Easy to Solve")."""

from . import activations
from .cnf import CNF, FlowResult
from .regularizers import (
    AbstractRegularizer,
    AbstractSolverHeuristic,
    ErrorEstimate,
    JacobianFrobenius,
    Kinetic,
    Stiffness,
    TaylorRK,
    steer_end_time,
)
from .solve import PAPER_TOL, SOLVERS, Solution, evaluation_nfe, get_solver, solve
from .taylor import solution_derivatives

__version__ = "0.1.0"

__all__ = [
    "activations",
    "solution_derivatives",
    "solve",
    "Solution",
    "evaluation_nfe",
    "get_solver",
    "SOLVERS",
    "PAPER_TOL",
    "AbstractRegularizer",
    "TaylorRK",
    "Kinetic",
    "JacobianFrobenius",
    "AbstractSolverHeuristic",
    "ErrorEstimate",
    "Stiffness",
    "steer_end_time",
    "CNF",
    "FlowResult",
]
