"""File names and format versions of everything featdiff writes to disk (one place, as in sae-lens)."""

FORMAT_VERSION = 1

# A featdiff model checkpoint folder (written by save_model, read by load_model).
MODEL_CONFIG = "featdiff_model.json"
MODEL_WEIGHTS = "model.safetensors"
PROMPTS = "prompts.safetensors"  # optional: token prompts a lab checkpoint carries

# An ActivationSet folder.
ACTS_META = "activations.json"
ACTS_SHARD = "acts_{index:05d}.safetensors"

# SAEs use sae-lens's own names (cfg.json, sae_weights.safetensors); a crosscoder folder likewise.
SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
CROSSCODER_CFG = "cfg.json"
CROSSCODER_WEIGHTS = "crosscoder_weights.safetensors"

# A Comparison folder.
SUMMARY = "summary.csv"
FEATURES = "features.parquet"
META = "meta.json"
FIGURES = "figures"

# How feature cards compute the logits a feature promotes (written into cards and the feature JSON).
LOGIT_METHOD = "direct path: (W_dec[f] * ln_final.w) @ W_U"
