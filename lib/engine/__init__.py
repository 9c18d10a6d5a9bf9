"""Runtime shared by the infer tasks: the active model, embedding cache and interactive predictor."""
