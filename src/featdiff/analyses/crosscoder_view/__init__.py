"""The crosscoder view of a lab (Shi et al., ACL 2026): its settings and table columns (config.py), the
MAS, NRN and evolution tables (tables.py), the intervention table (intervention_table.py), what it found
(view.py) and the whole run (run.py, ``crosscoder_view``)."""

from featdiff.analyses.crosscoder_view.config import (
    ANSWER_FORMATS,
    CODES,
    CONTROLS,
    CROSSCODER_EVAL_COLUMNS,
    EVOLUTION_COLUMNS,
    EVOLUTION_METHODS,
    FIGURE_NAMES,
    FIGURES_DIR,
    GENERALIZATION_FEATURE_COLUMNS,
    GENERALIZATION_OVERLAP_COLUMNS,
    GENERALIZATION_TASK_COLUMNS,
    INTERVENTION_COLUMNS,
    MAS_CATEGORY_COLUMNS,
    MAS_COLUMNS,
    META_FILE,
    NRN_COLUMNS,
    TABLE_COLUMNS,
    CrosscoderViewConfig,
)
from featdiff.analyses.crosscoder_view.run import crosscoder_view
from featdiff.analyses.crosscoder_view.view import CrosscoderView

__all__ = [
    "ANSWER_FORMATS",
    "CODES",
    "CONTROLS",
    "CROSSCODER_EVAL_COLUMNS",
    "EVOLUTION_COLUMNS",
    "EVOLUTION_METHODS",
    "FIGURES_DIR",
    "FIGURE_NAMES",
    "GENERALIZATION_FEATURE_COLUMNS",
    "GENERALIZATION_OVERLAP_COLUMNS",
    "GENERALIZATION_TASK_COLUMNS",
    "INTERVENTION_COLUMNS",
    "MAS_CATEGORY_COLUMNS",
    "MAS_COLUMNS",
    "META_FILE",
    "NRN_COLUMNS",
    "TABLE_COLUMNS",
    "CrosscoderView",
    "CrosscoderViewConfig",
    "crosscoder_view",
]
