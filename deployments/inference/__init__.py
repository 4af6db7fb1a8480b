"""Model inference: model spec, runner, prediction cache and the Ray Serve deployment."""
