"""featdiff: what post-training did to a model's features, feature by feature."""

__version__ = "0.1.0"

from featdiff.errors import FeatdiffError  # noqa: E402

__all__ = ["FeatdiffError", "__version__"]
