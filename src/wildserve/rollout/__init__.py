"""SpecActor: lossless speculative rollout for RL post-training (drafters, verifier, fastest-of-N)."""
