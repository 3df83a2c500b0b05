"""One widget per step of a fine-tune: model, data, method, preflight, train, export, try it, runs."""
