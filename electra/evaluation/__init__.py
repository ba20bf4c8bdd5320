"""Measuring models: the per-task dev metrics and their intervals (``evaluate``), the
bias benchmarks, the report and its plots, and ``compare`` (ELECTRA against masked LM at
equal FLOPs, which fine-tunes and evaluates snapshots). It may import every lower
package: ``core``, ``data``, ``pretraining`` and ``tasks``.
"""
