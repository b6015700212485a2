"""Every claim of the paper that the plan checks, and how each is decided.

Modules:
  verdicts  the decision rule (tests -> verdict), the test constructors, intervals, the
            Holm adjustment of the family of p-values, and every threshold with its reason
  gates     the regime each claim is about, and the structure tests claims share
  cifar     the judges of the CIFAR claims
  gaussian  the judges of the Gaussian-mixture claims (t-intervals over seeds)
  table     ``CLAIMS``: each claim's text, source, criterion, reason, judge and figures

A claim is judged from finished results only (``Evidence``); when what it needs is
missing (a skipped dataset, a failed or unselected run, an item the scale does not
train) the verdict is "not run" with the reason. The paper's own numbers are quoted only
where the documentation states them.
"""

from ncfine_jax.analysis.regime import COLLAPSE_FACTOR, EARLY_ACCURACY, TERMINAL_ACCURACY
from ncfine_jax.paper.claims.table import CLAIMS, judge
from ncfine_jax.paper.claims.verdicts import (ABOVE_CHANCE, CLOSE, CLP_MARGIN, FAILS,
                                              FINE_MARGIN, FLAT_RATIO, GRID_FRACTION, HOLDS,
                                              LARGE_SIGMA2, LINES_PERMUTATIONS,
                                              MSDR_MIN_EXCESS, NOT_RUN, UNINFORMATIVE,
                                              VERDICTS, Claim, Outcome, adjust_family, decide,
                                              holm, test_text)

__all__ = ["ABOVE_CHANCE", "CLAIMS", "CLOSE", "CLP_MARGIN", "COLLAPSE_FACTOR",
           "EARLY_ACCURACY", "FAILS", "FINE_MARGIN", "FLAT_RATIO", "GRID_FRACTION", "HOLDS",
           "LARGE_SIGMA2", "LINES_PERMUTATIONS", "MSDR_MIN_EXCESS", "NOT_RUN",
           "TERMINAL_ACCURACY", "UNINFORMATIVE", "VERDICTS", "Claim", "Outcome",
           "adjust_family", "decide", "holm", "judge", "test_text"]
