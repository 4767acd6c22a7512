"""Built-in structural losses. Each module is a pluggy plugin registered like any other."""
