"""Self-play dialog tree search: the stage (stage.py), the orchestrator (search.py), the per-seed
context (context.py), one module per strategy (text, latent, mcts; shared action parts in actions),
seeds, trees and their view."""
