"""Known-answer data: activations built from planted dictionaries."""

from featdiff.synthetic.crosscoder import plant_shared_specific
from featdiff.synthetic.planted import PlantedCheckpoints, plant_checkpoints

__all__ = ["PlantedCheckpoints", "plant_checkpoints", "plant_shared_specific"]
