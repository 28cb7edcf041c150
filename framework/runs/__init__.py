"""Recipe-driven runs: recipe schema, dotted keys, prompts, sweeps, jobs, the runner and the
per-process engine cache."""
