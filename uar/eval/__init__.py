"""Offline evaluation: NLG metrics, the rule-based CheXpert-style labeler, CE and retrieval.

See docs/evaluation.md. Modules: :mod:`uar.eval.labeler`, :mod:`uar.eval.metrics`, :mod:`uar.eval.ce`,
:mod:`uar.eval.retrieval`, :mod:`uar.eval.evaluate`.
"""
