"""Looking inside models and runs: training curves (curves.py), attention weights and rollout (attention.py,
drawn by attention_plots.py, with the positional-encoding matrix), token-embedding probes (embeddings.py)."""
