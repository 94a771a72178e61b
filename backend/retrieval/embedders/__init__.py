"""The embedder role: `base` (the interface, input bounds), the engines, `worker` (process isolation),
`catalogue` (one record per known model), `registry` (the embedder the settings name)."""
