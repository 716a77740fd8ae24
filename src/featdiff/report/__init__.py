"""What a reader sees: figures, feature cards and the self-contained HTML report."""

from featdiff.report.cards import FeatureCard, feature_card, feature_cards
from featdiff.report.html import findings, write_html_report

__all__ = ["FeatureCard", "feature_card", "feature_cards", "findings", "write_html_report"]
