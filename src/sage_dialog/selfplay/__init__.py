"""Self-play: user simulator, rollouts and dialog tree search with a judge."""
