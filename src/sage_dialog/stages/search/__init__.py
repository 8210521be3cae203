"""Self-play dialog tree search: seeds, rollouts, strategies, trees."""
