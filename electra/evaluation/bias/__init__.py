"""Bias benchmarks: CrowS-Pairs and StereoSet on the pretrained generator and discriminator,
the Equity Evaluation Corpus on the fine-tuned SST-2 classifier. ``common`` holds what they
share (reading files, loading models, the two token scorers and their batching); ``crows``,
``stereoset`` and ``eec`` hold one benchmark each, its metric and its runner. Every
function returns a plain JSON-ready dict (floats, ints, strings, ``None``) that the evaluate
stage writes straight to ``metrics.json``; every interval is a seeded 95% percentile
bootstrap of :mod:`electra.core.stats` over the benchmark's units.
"""

# Pitfall: the runners ``stereoset`` and ``eec`` share their names with their modules, and
# the runners win here (``bias.eec`` is the function). Reach a module's own names with
# ``from electra.evaluation.bias.eec import ...``, never ``bias.eec.<name>``.
from electra.evaluation.bias.common import SCORERS, DiscriminatorScorer, GeneratorScorer, ScorerName, load_scorer
from electra.evaluation.bias.crows import AUL_VARIANT, CROWS_VARIANTS, crows_pairs, crows_summary
from electra.evaluation.bias.eec import EEC_DIMENSIONS, eec
from electra.evaluation.bias.eec import _eec_dimension  # noqa: F401 (the model card's tests build EEC sections)
from electra.evaluation.bias.stereoset import (BLANK, STEREOSET_CANDIDATES, STEREOSET_VARIANTS, icat, stereoset,
                                               stereoset_summary)

__all__ = [
    "AUL_VARIANT", "BLANK", "CROWS_VARIANTS", "EEC_DIMENSIONS", "SCORERS", "STEREOSET_CANDIDATES",
    "STEREOSET_VARIANTS", "DiscriminatorScorer", "GeneratorScorer", "ScorerName", "crows_pairs",
    "crows_summary", "eec", "icat", "load_scorer", "stereoset", "stereoset_summary",
]
