"""Aligning two dictionaries feature by feature (decoder cosine or activation correlation), and mmcs / svcca."""

from featdiff.alignment.matching import Alignment, align, mmcs, svcca

__all__ = ["Alignment", "align", "mmcs", "svcca"]
