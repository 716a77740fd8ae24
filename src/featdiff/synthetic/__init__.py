"""Known-answer data: activations built from planted dictionaries, and the named scenarios of
featdiff.synthetic.scenarios (every way post-training can change a feature, with the exact truth)."""

from featdiff.synthetic.crosscoder import plant_shared_specific
from featdiff.synthetic.planted import PlantedCheckpoints, plant_checkpoints
from featdiff.synthetic.scenario import Scenario, exact_sae
from featdiff.synthetic.scenarios import HELD_OUT, SCENARIOS, TUNING, all_scenarios, make_scenario

__all__ = [
    "HELD_OUT",
    "SCENARIOS",
    "TUNING",
    "PlantedCheckpoints",
    "Scenario",
    "all_scenarios",
    "exact_sae",
    "make_scenario",
    "plant_checkpoints",
    "plant_shared_specific",
]
