"""Dataset formats shared by training, mining and benchmarking."""
